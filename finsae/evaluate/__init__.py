"""Evaluate stage: how strongly returns co-move inside peer groups, against a same-size random null."""

from finsae.evaluate.comovement import (
    SIZE_STRATA,
    CoMovement,
    CorrelationMatrix,
    comovement,
    correlation_matrix,
    pairwise_correlation,
)

__all__ = [
    "SIZE_STRATA",
    "CoMovement",
    "CorrelationMatrix",
    "comovement",
    "correlation_matrix",
    "pairwise_correlation",
]
