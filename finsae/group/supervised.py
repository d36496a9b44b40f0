"""Similarity with one learned weight per feature, fitted in closed form to past return co-movement.

For ``N`` companies with L2-normalised feature rows ``z_i`` (``Z`` is ``N x d``, the output of
:class:`finsae.group.similarity.FeatureTransform`; SAE latents, TF-IDF words or embedding dimensions alike)
and a matrix ``C`` of pairwise return correlations from a window that ends before formation, the similarity of
a pair is a weighted dot product whose terms are the explanation:

    s_w(i, j) = sum_k w_k z_ik z_jk,        contribution of feature k: w_k z_ik z_jk.

**Fit.** Ridge least squares over all ordered pairs ``i != j`` (``n_p = N (N - 1)`` of them) with an
unpenalised intercept ``c`` and a prior weight ``w0`` the weights shrink towards,

    min_{c, w}  sum_{i != j} (y_ij - c - sum_k w_k z_ik z_jk)^2 + lambda ||w - w0 1||^2,

with ``y_ij = C_ij - mean_{i != j} C_ij`` (missing correlations are set to the mean, i.e. ``y = 0``). The
normal equations need only ``d x d`` matrices, never the ``n_p x d`` pair matrix:

    A    = (Z^T Z) * (Z^T Z) - (Z * Z)^T (Z * Z)            (* elementwise; the second term removes i = j)
    b    = diag(Z^T Y Z)                                    (Y = y with a zero diagonal)
    pbar = ((1^T Z)^2 - 1^T (Z * Z)) / n_p                  (mean pair product per feature)
    A_c  = A - n_p pbar pbar^T,   b_c = b - n_p ybar pbar    (the intercept eliminated; ybar = mean of y)
    w    = (A_c + lambda I)^{-1} (b_c + lambda w0 1),   c = ybar - pbar^T w,

with ``lambda = alpha * trace(A_c) / d`` (``alpha`` is scale-free). One eigendecomposition ``A_c = V E V^T``
gives ``w`` for every ``alpha`` (:class:`PairSystem`). Priors: ``zero`` (``w0 = 0``, plain ridge) or
``cosine`` (``w0 = mu``, the least-squares slope of ``y`` on the plain cosine ``z_i . z_j``): as ``alpha``
grows the similarity becomes ``mu`` times the unsupervised cosine, so the prior interpolates between learned
and unsupervised.

**Non-negative weights** (``nonneg=True``): the same objective with ``w >= 0`` for the learned features (the
fixed ones and the prior take ``w0 = max(mu, 0)``), i.e. the convex quadratic programme

    min_{w >= 0}  1/2 w^T (A_c + lambda I) w - (b_c + lambda w0 1)^T w,

solved exactly by a primal-dual active set method (Hintermueller, Ito & Kunisch 2002, SIAM J. Optim.
13(3)): with ``F`` the free set, solve ``H_FF w_F = g_F`` (``w = 0`` off ``F``), then ``F <- {w_k > 0 on F} u
{gradient_k < 0 off F}``, until ``F`` repeats; the KKT conditions (``w >= 0``, ``grad >= 0``,
``w * grad = 0``) are then checked and a non-converged case falls back to :func:`scipy.optimize.nnls` on
the Cholesky factor. A latent then adds to a pair's similarity only where both companies have it.

**Many features.** When ``d`` exceeds ``max_features`` (TF-IDF vocabularies), only the ``max_features``
features active in most rows get a learned weight; the others keep ``w0`` and enter the fit as a fixed offset
(``y <- y - w0 S^R`` with ``S^R`` the dot products over the fixed features), so the same formulas apply.

The intercept does not change any ranking or grouping and is not part of
:meth:`SupervisedSimilarity.similarity`: the contributions of a pair sum to its similarity exactly.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
from scipy.optimize import nnls
from sklearn.base import BaseEstimator

from finsae.errors import DataError

logger = logging.getLogger(__name__)

PRIORS = ("zero", "cosine")


def _check_inputs(Z: object, C: object) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(Z, dtype=np.float64)
    c = np.asarray(C, dtype=np.float64)
    if z.ndim != 2 or len(z) < 3:
        raise DataError(f"features must be a 2-D matrix with at least 3 rows, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise DataError("features contain NaN or infinite values")
    if c.shape != (len(z), len(z)):
        raise DataError(f"correlation matrix is {c.shape}, expected {(len(z), len(z))} (one row per feature "
                        "row)")
    return z, c


def centred_pairs(C: np.ndarray) -> tuple[np.ndarray, float]:
    """``Y = C - mean_{i != j} C_ij`` over the valid off-diagonal entries, missing entries and the diagonal 0;
    and the mean that was removed."""
    c = np.asarray(C, dtype=np.float64)
    off = ~np.eye(len(c), dtype=bool)
    valid = off & np.isfinite(c)
    if not valid.any():
        raise DataError("the correlation matrix has no valid off-diagonal entry")
    mean = float(c[valid].mean())
    y = np.where(valid, c - mean, 0.0)
    return y, mean


def pair_gram(Z: np.ndarray) -> np.ndarray:
    """``A = (Z^T Z) * (Z^T Z) - (Z * Z)^T (Z * Z)``: the Gram matrix of the pair products over pairs ``i
    != j``."""
    g, q = _grams(Z)
    return g * g - q


def _grams(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z2 = Z * Z
    return Z.T @ Z, z2.T @ z2


def nonneg_quadratic(H: np.ndarray, g: np.ndarray, free: np.ndarray | None = None, *, max_iter: int = 50,
                     tol: float = 1e-9) -> np.ndarray:
    """``argmin_{x >= 0} 1/2 x^T H x - g^T x`` for a symmetric positive definite ``H`` (module docstring:
    primal-dual active set from the free set ``free``, default all; :func:`scipy.optimize.nnls` on the
    Cholesky factor if the active set does not settle or the KKT check fails at ``tol`` relative to
    ``max |g|``)."""
    h = np.asarray(H, dtype=np.float64)
    gv = np.asarray(g, dtype=np.float64)
    n = len(gv)
    if h.shape != (n, n):
        raise DataError(f"H has shape {h.shape}, expected {(n, n)}")
    f = np.ones(n, dtype=bool) if free is None else np.asarray(free, dtype=bool).copy()
    scale = max(float(np.abs(gv).max()), 1e-300)
    seen: set[bytes] = set()
    x = np.zeros(n)
    for _ in range(max_iter):
        x = np.zeros(n)
        idx = np.flatnonzero(f)
        if len(idx):
            try:
                x[idx] = scipy.linalg.cho_solve(scipy.linalg.cho_factor(h[np.ix_(idx, idx)]), gv[idx])
            except np.linalg.LinAlgError:
                raise DataError("the pair system is not positive definite: use alpha > 0") from None
        grad = h @ x - gv
        nxt = np.where(f, x > 0, grad < 0)
        if np.array_equal(nxt, f) or nxt.tobytes() in seen:
            break
        seen.add(f.tobytes())
        f = nxt
    x = np.clip(x, 0.0, None)
    grad = h @ x - gv
    if np.abs(np.where(x > 0, grad, np.minimum(grad, 0.0))).max() <= tol * scale:
        return x
    logger.info("active set did not settle for a %d-feature non-negative fit: solving with scipy's nnls", n)
    try:
        r = scipy.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        raise DataError("the pair system is not positive definite: use alpha > 0") from None
    x, _ = nnls(r, scipy.linalg.solve_triangular(r, gv, trans="T"), maxiter=50 * n)
    return x


class PairSystem:
    """The features' side of the normal equations (it does not depend on the returns): ``A_c``, ``pbar``, the
    learned/fixed split of the features and the fixed features' dot products. Build it once with
    :meth:`build`; :meth:`solve` then fits any returns window and any ``alpha`` (after :meth:`decompose`, by
    one eigendecomposition ``A_c = V E V^T`` shared by every ``alpha``; otherwise by one linear solve)."""

    def __init__(self, z: np.ndarray, learned: np.ndarray, fixed_dot: np.ndarray | None, pbar: np.ndarray,
                 a_c: np.ndarray, n_pairs: int, cosine: np.ndarray,
                 grams: tuple[np.ndarray, np.ndarray] | None = None,
                 z_learned: np.ndarray | None = None) -> None:
        self.z, self.learned, self.fixed_dot, self.pbar = z, learned, fixed_dot, pbar
        self.a_c, self.n_pairs, self.cosine, self._grams = a_c, n_pairs, cosine, grams
        self.trace = float(np.trace(a_c))
        self._eig: tuple[np.ndarray, np.ndarray] | None = None
        self._slopes: dict[str, float] = {}  # rhs(tag=...): per tag, the prior's slope mu
        self._rhs: dict[tuple[str, float], tuple[np.ndarray, float]] = {}  # per (tag, w0): (b_c, ybar)
        self._z_learned = z_learned  # z[:, learned], when the caller has it already

    @classmethod
    def build(
        cls, Z: object, max_features: int | None = 2048, learned: np.ndarray | None = None
    ) -> PairSystem:
        """``learned``: the indices of the features to learn (default: the ``max_features`` most often active,
        or all); given, e.g., to fit on a subset of companies with the full set's choice (a text-only
        choice)."""
        z = np.asarray(Z, dtype=np.float64)
        if z.ndim != 2 or len(z) < 3:
            raise DataError(f"features must be a 2-D matrix with at least 3 rows, got shape {z.shape}")
        n, d = z.shape
        if learned is not None or (max_features is not None and d > max_features):
            if learned is None:
                active = (z != 0).sum(axis=0)
                learned = np.sort(np.argsort(-active, kind="stable")[:max_features])
            learned = np.asarray(learned, dtype=np.int64)
            rest = np.setdiff1d(np.arange(d), learned)
            zr = z[:, rest]
            fixed_dot = zr @ zr.T
            np.fill_diagonal(fixed_dot, 0.0)
        else:
            learned, fixed_dot = np.arange(d), None
        zl = z[:, learned]
        n_pairs = n * (n - 1)
        pbar = (zl.sum(axis=0) ** 2 - (zl * zl).sum(axis=0)) / n_pairs
        g, q = _grams(zl)
        a_c = g * g - q - n_pairs * np.outer(pbar, pbar)
        cosine = z @ z.T
        np.fill_diagonal(cosine, 0.0)
        return cls(z, learned, fixed_dot, pbar, a_c, n_pairs, cosine, (g, q), zl)

    def subset(self, rows: np.ndarray) -> PairSystem:
        """The system of the companies ``rows`` only (the same learned features), without recomputing the Gram
        matrices over them: ``Z_S^T Z_S = Z^T Z - Z_R^T Z_R`` for the left-out rows ``R`` (and alike for
        ``(Z * Z)``); the fixed part and the cosine are sliced. Equals :meth:`build` on ``Z[rows]`` with
        ``learned`` (up to rounding)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._grams is None:
            raise DataError("this system keeps no Gram matrices to take a subset of")
        if len(rows) < 3:
            raise DataError(f"a subset needs at least 3 companies, got {len(rows)}")
        out = np.setdiff1d(np.arange(len(self.z)), rows)
        z = self.z[rows]
        zl, zo = z[:, self.learned], self.z[np.ix_(out, self.learned)]
        g0, q0 = _grams(zo)
        g, q = self._grams[0] - g0, self._grams[1] - q0
        n = len(rows)
        n_pairs = n * (n - 1)
        pbar = (zl.sum(axis=0) ** 2 - (zl * zl).sum(axis=0)) / n_pairs
        a_c = g * g - q - n_pairs * np.outer(pbar, pbar)
        ix = np.ix_(rows, rows)
        fixed = self.fixed_dot[ix] if self.fixed_dot is not None else None
        return PairSystem(z, self.learned, fixed, pbar, a_c, n_pairs, self.cosine[ix], (g, q), zl)

    def decompose(self) -> PairSystem:
        """Compute (once) the eigendecomposition used to solve for many ``alpha``."""
        if self._eig is None:
            e, v = np.linalg.eigh(self.a_c)
            self._eig = (np.clip(e, 0.0, None), v)
        return self

    def similarity(self, weights: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``sum_k w_k z_ik z_jk`` for rows ``rows`` (default all) against every row, computed over the
        learned features plus ``w0`` times the fixed features' dot products (equal to ``Z diag(w) Z^T``;
        diagonal entries of the fixed part are 0, which no ranking or grouping reads)."""
        zl = self.z_learned
        r = slice(None) if rows is None else rows
        s = (zl[r] * weights[self.learned]) @ zl.T
        if self.fixed_dot is not None:
            rest = np.setdiff1d(np.arange(self.n_features), self.learned)
            s += float(weights[rest[0]]) * self.fixed_dot[r]
        return s

    @property
    def z_learned(self) -> np.ndarray:
        """The learned features' columns of ``z`` (gathered once: every similarity and rhs reads them)."""
        if self._z_learned is None:
            self._z_learned = self.z[:, self.learned]
        return self._z_learned

    @property
    def n_features(self) -> int:
        return self.z.shape[1]

    def prior_slope(self, y: np.ndarray) -> float:
        """Least-squares slope ``mu`` of ``y_ij`` on the cosine over pairs ``i != j`` (with an intercept)."""
        off = ~np.eye(len(y), dtype=bool)
        s, t = self.cosine[off], y[off]
        var = float(np.var(s))
        return float(np.mean((s - s.mean()) * (t - t.mean())) / var) if var > 0 else 0.0

    def rhs(
        self, C: np.ndarray, prior: str = "cosine", nonneg: bool = False, *, tag: str | None = None
    ) -> tuple[np.ndarray, float, float]:
        """The returns' side for correlations ``C`` (``N x N``, NaN allowed): ``(b_c, ybar, w0)``; it does not
        depend on ``alpha``, so one is reused for every ``alpha`` (``nonneg``: ``w0 = max(mu, 0)``).

        ``tag``: a name for ``C`` on this system (the same tag must always mean the same correlations): the
        result is kept per ``(tag, w0)``, since ``b_c`` and ``ybar`` depend on ``C`` and ``w0`` only, so the
        signed and the non-negative fits of one prior (the same ``w0`` unless ``mu < 0``), and the zero prior
        of both, share one computation (the same numbers as without a tag)."""
        if prior not in PRIORS:
            raise DataError(f"unknown prior {prior!r}; choose one of {list(PRIORS)}")
        made: list[np.ndarray] = []

        def centred() -> np.ndarray:  # the centred pair correlations, computed at most once per call
            if not made:
                made.append(centred_pairs(_check_inputs(self.z, C)[1])[0])
            return made[0]

        if prior != "cosine":
            w0 = 0.0
        elif tag is not None and tag in self._slopes:
            w0 = self._slopes[tag]
        else:
            w0 = self.prior_slope(centred())
            if tag is not None:
                self._slopes[tag] = w0
        if nonneg:
            w0 = max(w0, 0.0)
        if tag is not None and (tag, w0) in self._rhs:
            b, ybar = self._rhs[(tag, w0)]
            return b, ybar, w0
        y = centred()
        if self.fixed_dot is not None:
            y = y - w0 * self.fixed_dot
        ybar = float(y.sum() / self.n_pairs)
        zl = self.z_learned
        b = np.einsum("ik,ik->k", zl, y @ zl) - self.n_pairs * ybar * self.pbar
        if tag is not None:
            self._rhs[(tag, w0)] = (b, ybar)
        return b, ybar, w0

    def solve(self, C: np.ndarray | tuple[np.ndarray, float, float], alpha: float,
              prior: str = "cosine", nonneg: bool = False,
              free: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
        """Full-length weights (learned ones and ``w0`` for fixed features), the intercept and ``w0`` for the
        correlations ``C`` (``N x N``, NaN allowed; or its :meth:`rhs`, then ``prior`` and ``nonneg`` are the
        rhs's: give the same ``nonneg`` to both) and ridge strength ``alpha`` (``inf``: the prior itself).
        ``nonneg``: learned weights ``>= 0`` (module docstring); ``free``: a starting free set for it (e.g.
        the positive weights of a nearby ``alpha``), which changes the path, not the solution."""
        if alpha < 0:
            raise DataError(f"alpha must be >= 0, got {alpha}")
        b, ybar, w0 = C if isinstance(C, tuple) else self.rhs(C, prior, nonneg)
        if nonneg and w0 < 0:
            raise DataError(f"a non-negative fit needs a prior weight >= 0, got {w0} (build its rhs with "
                            "nonneg=True)")
        m = len(self.learned)
        if np.isinf(alpha):
            wl = np.full(m, w0)
        elif nonneg:
            lam = alpha * self.trace / m
            h = self.a_c + lam * np.eye(m)
            wl = nonneg_quadratic(h, b + lam * w0, None if free is None else np.asarray(free)[self.learned])
        else:
            lam = alpha * self.trace / m
            if self._eig is not None:
                e, v = self._eig
                if lam == 0 and e.min() <= 1e-12 * max(e.max(), 1e-300):
                    raise DataError("alpha = 0 with a singular pair Gram matrix: use alpha > 0")
                wl = v @ ((v.T @ (b + lam * w0)) / (e + lam))
            else:
                try:
                    wl = np.linalg.solve(self.a_c + lam * np.eye(m), b + lam * w0)
                except np.linalg.LinAlgError:
                    raise DataError("alpha = 0 with a singular pair Gram matrix: use alpha > 0") from None
        w = np.full(self.n_features, w0)
        w[self.learned] = wl
        intercept = ybar - float(self.pbar @ wl)
        return w, intercept, w0


def weighted_similarity(weights: np.ndarray, Z: np.ndarray, Z2: np.ndarray | None = None) -> np.ndarray:
    """``S = Z diag(w) Z2^T`` (``Z2`` defaults to ``Z``)."""
    z2 = Z if Z2 is None else Z2
    return (Z * weights) @ z2.T


class SupervisedSimilarity(BaseEstimator):
    """Weighted-dot-product similarity with weights fitted to past pair correlations (module docstring).

    Parameters:
        alpha: scale-free ridge strength (``lambda = alpha trace(A_c) / d``); ``float("inf")`` = the prior.
        prior: ``"cosine"`` (shrink towards the scaled unsupervised cosine) or ``"zero"`` (plain ridge).
        max_features: at most this many features get a learned weight (the most often active ones).
        nonneg: constrain the weights to ``w >= 0`` (module docstring).

    Attributes (after ``fit``): ``weights_`` (length ``d``), ``intercept_``, ``prior_weight_``, ``learned_``
    (indices of the learned features), ``n_features_in_``.
    """

    def __init__(self, alpha: float = 1.0, prior: str = "cosine", max_features: int | None = 2048,
                 nonneg: bool = False) -> None:
        self.alpha = alpha
        self.prior = prior
        self.max_features = max_features
        self.nonneg = nonneg

    def fit(self, Z: object, C: object, system: PairSystem | None = None) -> SupervisedSimilarity:
        """Fit to correlations ``C`` (``N x N``, rows in the order of ``Z``'s rows; NaN = unknown pair).
        ``system``: a :class:`PairSystem` already built for ``Z`` (e.g. shared across several ``alpha``)."""
        z, c = _check_inputs(Z, C)
        if system is None:
            system = PairSystem.build(z, self.max_features)
        elif system.z.shape != z.shape:
            raise DataError(f"system was built for features of shape {system.z.shape}, got {z.shape}")
        self.weights_, self.intercept_, self.prior_weight_ = system.solve(c, self.alpha, self.prior,
                                                                          self.nonneg)
        self.learned_ = system.learned
        self.n_features_in_ = z.shape[1]
        self.z_ = z
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "weights_"):
            raise DataError("SupervisedSimilarity is not fitted; call fit first")

    def similarity(self, Z: object | None = None, Z2: object | None = None) -> np.ndarray:
        """``sum_k w_k z_ik z_jk`` for the rows of ``Z`` (default: the fitted rows) against those of ``Z2``
        (default ``Z``). Features of new companies work alike: the weights belong to features, not
        companies."""
        self._check_fitted()
        z = self.z_ if Z is None else np.asarray(Z, dtype=np.float64)
        z2 = None if Z2 is None else np.asarray(Z2, dtype=np.float64)
        for m in (z, z2):
            if m is not None and m.shape[1] != self.n_features_in_:
                raise DataError(f"features have {m.shape[1]} columns, the weights were fitted on "
                                f"{self.n_features_in_}")
        return weighted_similarity(self.weights_, z, z2)

    def contributions(self, i: int, j: int, Z: object | None = None) -> np.ndarray:
        """Per feature ``k``: ``w_k z_ik z_jk`` for rows ``i``, ``j`` of ``Z`` (default: the fitted rows);
        they sum to ``similarity()[i, j]``."""
        self._check_fitted()
        z = self.z_ if Z is None else np.asarray(Z, dtype=np.float64)
        if not (0 <= i < len(z) and 0 <= j < len(z)):
            raise DataError(f"rows ({i}, {j}) out of range for {len(z)} companies")
        return self.weights_ * z[i] * z[j]

    def predict_correlation(self, Z: object | None = None) -> np.ndarray:
        """The fitted model of the pair correlation: window mean + intercept + similarity (diagonal 1)."""
        s = self.similarity(Z) + self.intercept_
        np.fill_diagonal(s, 1.0)
        return s


def similarity_distance(similarity: np.ndarray) -> np.ndarray:
    """A dissimilarity for the clusterers: ``max_{i != j} S_ij - S_ij`` (non-negative, zero diagonal);
    average linkage on it merges in the same order as on ``-S``."""
    s = np.asarray(similarity, dtype=np.float64)
    off = ~np.eye(len(s), dtype=bool)
    d = float(np.max(s[off])) - s
    np.fill_diagonal(d, 0.0)
    return np.clip(d, 0.0, None)


