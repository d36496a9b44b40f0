"""Evaluate stage: how strongly returns co-move inside peer groups, against a same-size random null."""

from finsae.evaluate.comovement import (
    SIZE_STRATA,
    CoMovement,
    CorrelationMatrix,
    comovement,
    correlation_matrix,
    null_distribution,
    pairwise_correlation,
    within_pairs,
)

__all__ = [
    "SIZE_STRATA",
    "CoMovement",
    "CorrelationMatrix",
    "comovement",
    "correlation_matrix",
    "null_distribution",
    "pairwise_correlation",
    "within_pairs",
]
