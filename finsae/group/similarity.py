"""Feature transforms for similarity: companies are compared by the cosine of transformed feature vectors.

``FeatureTransform`` is a scikit-learn transformer fitted on formation-time documents only (its IDF weights
and PCA basis never see later text). For a pooled feature matrix ``X`` (documents x latents, non-negative for
SAE features):

* ``raw``: ``X``;
* ``log1p``: ``log(1 + X)`` (damps a few very strong latents);
* ``binary``: ``1[X > 0]`` (which latents fire at all);
* ``idf``: ``log(1 + X) * idf_j`` with ``idf_j = log((1 + n) / (1 + df_j)) + 1`` (scikit-learn's smoothed IDF,
  ``df_j`` = documents where latent ``j`` is active in the fitting set): frequent, generic latents say little
  about a company.

Then, optionally, PCA to ``n_components`` (fitted on the same documents), and rows are scaled to unit length
so that ``Z @ Z.T`` is the cosine similarity. All-zero rows stay zero (similarity 0 to everyone).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA, TruncatedSVD

from finsae.errors import DataError

#: The feature transforms, spelled once: configs, the export schema and the transform itself use these names.
TransformName = Literal["raw", "log1p", "binary", "idf"]
TRANSFORMS: tuple[str, ...] = get_args(TransformName)


def _check_matrix(X: object) -> sp.csr_matrix | np.ndarray:
    if sp.issparse(X):
        x = sp.csr_matrix(X, dtype=np.float64)
        values = x.data
    else:
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2:
            raise DataError(f"features must be a 2-D matrix, got shape {x.shape}")
        values = x
    if not np.isfinite(values).all():
        raise DataError("features contain NaN or infinite values")
    return x


def settle_ties(values: np.ndarray, digits: int = 12, *, copy: bool = True) -> np.ndarray:
    """``values`` (float64; a copy unless ``copy=False`` and they are float64 already, then rounded in place)
    rounded to a grid of ``10^(e + 1 - digits)``, ``e`` the decimal exponent of the largest finite magnitude;
    infinite and NaN entries stay as they are.

    Similarities that are equal in exact arithmetic (binary features: ``|A & B| / sqrt(|A| |B|)`` repeats
    across pairs) come out of a matrix product equal only to the last bits, and which bits depends on the
    machine's BLAS kernel (the order it sums in). Ranking them, or merging at them, then breaks the tie
    differently on another CPU. On the grid they are exactly equal, so ties break by the same rule (position)
    everywhere; values closer than one grid step (1e-11 for cosines) count as tied. Costs one pass over the
    array."""
    v = np.array(values, dtype=np.float64, copy=True if copy else None)  # None: copy only to convert
    scale = float(np.max(np.abs(v), where=np.isfinite(v), initial=0.0))
    if scale == 0.0:
        return v
    step = 10.0 ** (np.floor(np.log10(scale)) + 1 - digits)
    np.divide(v, step, out=v)  # +-inf and NaN pass through the three steps unchanged
    np.round(v, out=v)
    np.multiply(v, step, out=v)
    return v


def largest_first(values: np.ndarray, k: int, *, settle: bool = True) -> np.ndarray:
    """Per row of ``values`` (2-d, no NaN), the column indices of its ``k`` largest entries, largest first,
    equal entries in column order: ``np.argsort(-values, axis=1, kind="stable")[:, :k]`` without sorting
    whole rows (a partition finds each row's k-th largest value; only the k chosen entries are sorted).
    Entries are compared after :func:`settle_ties` (``settle=False``: as they are, for values already settled,
    or made distinct on purpose), so that ties only rounding separates break by column on every CPU: which
    of several equal entries a partition (``np.argpartition``) returns, and in what order, depends on the
    CPU's sorting kernel (numpy's AVX-512 one differs from its AVX2 one)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise DataError(f"values must be 2-d, got shape {v.shape}")
    n, d = v.shape
    k = min(int(k), d)
    if k <= 0 or n == 0:
        return np.zeros((n, max(k, 0)), dtype=np.int64)
    neg = settle_ties(-v, copy=False) if settle else -v  # = -settle_ties(v): the grid is symmetric
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th smallest of -v
    better = neg < kth
    tied = neg == kth  # the k-th value itself: as many of its first (by column) entries as fill k
    need = k - better.sum(axis=1, keepdims=True)
    chosen = better | (tied & (np.cumsum(tied, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(n, k)  # each row's chosen columns, in column order
    order = np.argsort(np.take_along_axis(neg, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


def l2_normalize(z: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", z, z))[:, None]
    return z / np.where(norms > 0, norms, 1.0)


class FeatureTransform(TransformerMixin, BaseEstimator):
    """Transform + optional PCA + L2 normalisation (see the module docstring).

    Parameters:
        kind: the transform, one of :data:`TRANSFORMS`.
        n_components: PCA dimension (``None`` = no PCA); sparse input uses ``TruncatedSVD`` (no centring, as
            is usual for sparse text matrices).
        random_state: seed of the randomized PCA/SVD solver.

    Attributes (after ``fit``): ``idf_`` (``idf`` only), ``pca_`` (with ``n_components``), ``n_features_in_``.
    """

    def __init__(self, kind: str = "log1p", n_components: int | None = None, random_state: int = 0) -> None:
        self.kind = kind
        self.n_components = n_components
        self.random_state = random_state

    def _elementwise(self, x: sp.csr_matrix | np.ndarray) -> sp.csr_matrix | np.ndarray:
        if self.kind not in TRANSFORMS:
            raise DataError(f"unknown transform {self.kind!r}; choose one of {list(TRANSFORMS)}")
        if self.kind == "raw":
            return x
        if self.kind == "binary":
            return (x > 0).astype(np.float64) if sp.issparse(x) else (x > 0).astype(np.float64)
        if np.min(x.data if sp.issparse(x) else x, initial=0.0) < 0:
            raise DataError(f"transform {self.kind!r} needs non-negative features; use 'raw' for embeddings")
        return x.log1p() if sp.issparse(x) else np.log1p(x)  # type: ignore[union-attr]

    def fit(self, X: object, y: object = None) -> FeatureTransform:
        x = _check_matrix(X)
        self.n_features_in_ = x.shape[1]
        z = self._elementwise(x)
        if self.kind == "idf":
            df = np.asarray((x > 0).sum(axis=0)).ravel()
            self.idf_ = np.log((1.0 + x.shape[0]) / (1.0 + df)) + 1.0
            z = z @ sp.diags(self.idf_) if sp.issparse(z) else z * self.idf_
        if self.n_components is not None:
            if not 1 <= self.n_components < min(x.shape):
                raise DataError(f"n_components={self.n_components} must be between 1 and {min(x.shape) - 1}")
            cls = TruncatedSVD if sp.issparse(z) else PCA
            self.pca_ = cls(n_components=self.n_components, random_state=self.random_state).fit(z)
        return self

    def transform(self, X: object) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise DataError("FeatureTransform is not fitted; call fit first")
        x = _check_matrix(X)
        if x.shape[1] != self.n_features_in_:
            raise DataError(f"features have {x.shape[1]} columns, the transform was fitted on "
                            f"{self.n_features_in_}")
        z = self._elementwise(x)
        if self.kind == "idf":
            z = z @ sp.diags(self.idf_) if sp.issparse(z) else z * self.idf_
        if self.n_components is not None:
            z = self.pca_.transform(z)
        z = z.toarray() if sp.issparse(z) else np.asarray(z)  # type: ignore[union-attr]
        return l2_normalize(z)


def cosine_similarity(z: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows of an L2-normalised matrix (``FeatureTransform`` output): ``Z @ Z.T``."""
    return np.clip(z @ z.T, -1.0, 1.0)
