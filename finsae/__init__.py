"""finsae: company peer groups from sparse-autoencoder features of business descriptions.

The pipeline lives in sub-packages, one job each:
``finsae.data`` (universe, prices, returns) -> ``finsae.group`` (peer groups) ->
``finsae.evaluate`` (co-movement metrics and the benchmark). ``finsae.cli`` is a thin layer over them.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
