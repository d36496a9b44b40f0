"""Co-movement of returns inside peer groups: pure functions on a returns panel and group labels.

Notation: ``N`` companies with usable returns in a window, correlation matrix ``C`` (pairwise-complete Pearson
correlation of their log returns), group labels ``g(i)`` (missing = in no group), group ``k`` with ``n_k``
members and within-group pair set ``P_k = {(i, j): i < j, g(i) = g(j) = k}``.

* pair-weighted mean ``sum_k sum_{P_k} C_ij / sum_k |P_k|``: every within-group pair counts once;
* cluster-weighted mean ``(1/K) sum_k mean_{P_k} C_ij`` over the ``K`` groups with ``n_k >= 2``: the reference
  paper's metric, which rewards many small groups;
* coverage ``sum_{k: n_k >= 2} n_k / N``; pair density ``sum_k |P_k| / (N (N - 1) / 2)``;
* null: the same metrics for the labels permuted over the ``N`` companies (same group sizes exactly), with the
  percentile of the real value in the null distribution (ties count half);
* 95% CI: percentile bootstrap resampling the groups (with ``n_k >= 2``) with replacement.

Pairs whose overlap is shorter than ``min_periods`` have no correlation and are left out of every mean (they
still count in pair density, which is a property of the grouping).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from finsae.data.prices import ReturnsPanel
from finsae.errors import DataError

#: Size strata of groups (inclusive bounds), as in the foundation issue.
SIZE_STRATA: tuple[tuple[str, int, float], ...] = (
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-15", 6, 15),
    ("16-50", 16, 50),
    ("51+", 51, np.inf),
)


#: Above this share of N^2 within-group pairs, null draws use dense block sums instead of gathering pairs.
DENSE_NULL_SHARE = 0.1


def pairwise_correlation(returns: np.ndarray, min_periods: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise-complete Pearson correlation of the columns of ``returns`` (T x N, NaN = missing).

    For columns ``x, y`` and the periods where both are present (``n`` of them):
    ``r = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2)(n Syy - Sy^2))``, computed for all pairs at once with four
    matrix products over the 0/1 presence mask. Equals ``pandas.DataFrame.corr(min_periods=...)``.

    Returns ``(corr, n_obs)``: N x N correlation (NaN where ``n_obs < min_periods`` or a variance is zero) and
    the N x N overlap counts.
    """
    corr, n = _correlation(returns, min_periods, None)
    return corr, n.astype(np.int64)


def pairwise_correlation_at(returns: np.ndarray, flat: np.ndarray, min_periods: int = 3) -> np.ndarray:
    """The entries ``flat`` (positions ``i * N + j`` in the N x N matrix) of :func:`pairwise_correlation`, bit
    for bit: the same matrix products, with the elementwise steps after them done only where asked (what a
    bootstrap that reads a few pairs per draw needs)."""
    return _correlation(returns, min_periods, np.asarray(flat, dtype=np.int64))[0]


def _correlation(returns: np.ndarray, min_periods: int,
                 flat: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(correlation, overlap counts): N x N, or at the positions ``flat`` only (then 1-d)."""
    x = np.asarray(returns, dtype=np.float64)
    n_cols = x.shape[1]
    mask = ~np.isnan(x)
    m = mask.astype(np.float64)
    x0 = np.where(mask, x, 0.0)
    if flat is None:
        def at(a: np.ndarray) -> np.ndarray:
            return a

        def at_t(a: np.ndarray) -> np.ndarray:  # the transpose's entries
            return a.T
    else:
        rows, cols = np.divmod(flat, n_cols)
        flat_t = cols * n_cols + rows

        def at(a: np.ndarray) -> np.ndarray:
            return np.take(a.ravel(), flat)

        def at_t(a: np.ndarray) -> np.ndarray:
            return np.take(a.ravel(), flat_t)
    if mask.all():
        xc = x0 - x0.mean(axis=0)
        cov = xc.T @ xc
        var = np.diag(cov)
        with np.errstate(invalid="ignore", divide="ignore"):
            prod = np.outer(var, var) if flat is None else np.take(var, rows) * np.take(var, cols)
            corr = at(cov) / np.sqrt(prod)
        n = np.full(corr.shape, float(x.shape[0]))
    else:
        # demean by column for numerical stability (correlation is shift invariant per column)
        counts = mask.sum(axis=0)
        col_mean = np.divide(x0.sum(axis=0), counts, out=np.zeros(x.shape[1]), where=counts > 0)
        x0 = np.where(mask, x - col_mean, 0.0)
        n_full = m.T @ m
        sx_full = x0.T @ m  # sx[i, j] = sum of x_i over periods where both i and j are present
        sxx_full = (x0 * x0).T @ m
        sxy_full = x0.T @ x0
        n, sx, sx_t, sxx, sxx_t = at(n_full), at(sx_full), at_t(sx_full), at(sxx_full), at_t(sxx_full)
        with np.errstate(invalid="ignore", divide="ignore"):
            num = n * at(sxy_full) - sx * sx_t
            den = np.sqrt((n * sxx - sx * sx) * (n * sxx_t - sx_t * sx_t))
            corr = num / den
    corr[n < min_periods] = np.nan
    corr[~np.isfinite(corr)] = np.nan
    np.clip(corr, -1.0, 1.0, out=corr)
    return corr, n


@dataclass(frozen=True)
class CorrelationMatrix:
    """Correlation of log returns in one window, with the upper-triangle pair vectors used by every metric.

    Attributes:
        tickers: the N companies with usable returns.
        values: N x N correlation (NaN where undefined).
        frequency, start, end: the window.
        dropped: tickers asked for but without usable returns, with the reason.
    """

    tickers: pd.Index
    values: np.ndarray
    frequency: str
    start: pd.Timestamp
    end: pd.Timestamp
    dropped: pd.Series
    _c0: np.ndarray = field(init=False, repr=False, compare=False)
    _valid: np.ndarray = field(init=False, repr=False, compare=False)
    _all_valid: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        valid = ~np.isnan(self.values)
        np.fill_diagonal(valid, False)
        object.__setattr__(self, "_c0", np.where(valid, self.values, 0.0))
        object.__setattr__(self, "_valid", valid.astype(np.float64))
        object.__setattr__(self, "_all_valid", bool(valid.sum() == valid.size - len(valid)))

    @property
    def n_pairs(self) -> int:
        n = len(self.tickers)
        return n * (n - 1) // 2

    def mean_all_pairs(self) -> float:
        """Mean correlation over all pairs with a valid correlation."""
        return float(self._c0.sum() / self._valid.sum())

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, index=self.tickers, columns=self.tickers)


def correlation_matrix(panel: ReturnsPanel, min_periods: int | None = None) -> CorrelationMatrix:
    """Pairwise-complete correlation of a returns panel. ``min_periods`` defaults to half the window's periods
    (at least 3)."""
    if panel.returns.shape[1] < 2:
        raise DataError(f"need at least 2 companies with returns to correlate; got {panel.returns.shape[1]}")
    if min_periods is None:
        min_periods = max(3, panel.n_periods // 2)
    corr, _ = pairwise_correlation(panel.returns.to_numpy(), min_periods=min_periods)
    return CorrelationMatrix(panel.tickers, corr, panel.frequency, panel.start, panel.end, panel.dropped)


def encode_labels(corr: CorrelationMatrix, labels: pd.Series) -> tuple[np.ndarray, pd.Index, int]:
    """Integer group codes aligned to ``corr.tickers`` (-1 = no group), the group names, and the number of
    labelled tickers dropped for lack of returns.

    Raises :class:`DataError` for duplicate tickers in ``labels`` or tickers that are neither in the window
    nor among its dropped tickers (i.e. not in the universe).
    """
    if not isinstance(labels, pd.Series):
        raise DataError(
            f"group labels must be a pandas Series indexed by ticker, not {type(labels).__name__}"
        )
    if labels.index.has_duplicates:
        dups = sorted(set(labels.index[labels.index.duplicated()]))
        raise DataError(f"group labels {labels.name!r}: duplicate tickers {dups[:10]}")
    known = corr.tickers.union(corr.dropped.index)
    unknown = labels.index.difference(known)
    if len(unknown):
        raise DataError(
            f"group labels {labels.name!r}: {len(unknown)} ticker(s) not in the universe: "
            f"{list(unknown[:10])}"
        )
    n_dropped = int(labels.index.isin(corr.dropped.index).sum())
    aligned = labels.reindex(corr.tickers)
    codes, names = pd.factorize(aligned, use_na_sentinel=True)
    return codes.astype(np.int32), pd.Index(names), n_dropped


def within_pairs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All within-group pairs ``(i, j, group)`` with ``i < j`` of integer group codes (-1 = no group):
    group by group in code order, within a group in row-major order of its members (``np.triu_indices``
    over the sorted members), built for all groups at once."""
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    empty = np.array([], dtype=np.int64)
    if len(order) == 0:
        return empty, empty, empty
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    keep = sizes >= 2
    if not keep.any():
        return empty, empty, empty
    starts, sizes = starts[keep], sizes[keep]
    members = order.astype(np.int64)  # stable argsort: each group's members already in increasing order
    # one "row" per (group, first member r): partners r+1 .. m-1, m - 1 - r of them
    row_group = np.repeat(np.arange(len(sizes)), sizes - 1)
    row_first = np.arange(len(row_group)) - np.repeat(np.cumsum(sizes - 1) - (sizes - 1), sizes - 1)
    row_len = sizes[row_group] - 1 - row_first
    pair_row = np.repeat(np.arange(len(row_group)), row_len)
    offset = np.arange(len(pair_row)) - np.repeat(np.cumsum(row_len) - row_len, row_len)
    base = starts[row_group[pair_row]]
    first = row_first[pair_row]
    wi = members[base + first]
    wj = members[base + first + 1 + offset]
    wg = sorted_codes[base].astype(np.int64)
    return wi, wj, wg


def _group_sums(corr: CorrelationMatrix, wi: np.ndarray, wj: np.ndarray, wg: np.ndarray,
                n_groups: int, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per group: sum of valid correlations over the pairs ``(wi, wj)`` of group ``wg``, and their count.
    ``counts`` may be passed when every correlation is valid (then it does not depend on the pairs)."""
    flat = wi * len(corr.tickers) + wj
    sums = np.bincount(wg, weights=np.take(corr._c0.ravel(), flat), minlength=n_groups)
    if counts is None:
        counts = np.bincount(wg, weights=np.take(corr._valid.ravel(), flat), minlength=n_groups)
    return sums, counts


def null_distribution(
    corr: CorrelationMatrix,
    codes: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair- and cluster-weighted means of ``draws`` random relabellings with exactly the group sizes of
    ``codes``.

    Draw ``d`` takes ``q = rng.permutation(N)`` and gives company ``q[i]`` the label of company ``i``. The
    within-group pairs of the relabelled grouping are then ``(q[i], q[j])`` for the real within-group pairs
    ``(i, j)``, so a draw gathers only within-group correlations instead of scanning all ``N(N-1)/2`` pairs.
    """
    k = int(codes.max()) + 1 if len(codes) else 0
    wi, wj, wg = pairs if pairs is not None else within_pairs(codes)  # pairs: within_pairs(codes), if known
    null_pw = np.empty(draws)
    null_cw = np.empty(draws)
    if draws == 0:
        return null_pw, null_cw
    if (codes == codes[0]).all():  # one label for everyone: every relabelling is the same partition
        pw, cw = _means(*_group_sums(corr, wi, wj, wg, k))
        null_pw[:], null_cw[:] = pw, cw
        return null_pw, null_cw
    fixed_counts = np.bincount(wg, minlength=k).astype(np.float64) if corr._all_valid else None
    n = len(codes)
    if len(wi) > n * n * DENSE_NULL_SHARE:  # many pairs: block sums of the permuted matrix are cheaper
        import scipy.sparse as sp

        labelled = np.flatnonzero(codes >= 0)
        for d in range(draws):
            q = rng.permutation(n)
            rows = q[labelled]  # company q[i] takes the label of company i
            lab = codes[labelled]
            member = sp.csr_matrix((np.ones(len(rows)), (lab, rows)), shape=(k, n))
            sums = 0.5 * np.bincount(lab, weights=(member @ corr._c0)[lab, rows], minlength=k)
            counts = fixed_counts if fixed_counts is not None else \
                0.5 * np.bincount(lab, weights=(member @ corr._valid)[lab, rows], minlength=k)
            null_pw[d], null_cw[d] = _means(sums, counts)
        return null_pw, null_cw
    for d in range(draws):
        q = rng.permutation(n)
        null_pw[d], null_cw[d] = _means(*_group_sums(corr, q[wi], q[wj], wg, k, fixed_counts))
    return null_pw, null_cw


def _means(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    has = counts > 0
    if not has.any():
        return np.nan, np.nan
    return float(sums.sum() / counts.sum()), float(np.mean(sums[has] / counts[has]))


#: Draws within this relative distance of the value are ties: the same figure computed in another order
#: (a placebo that reproduces the book, a relabelling that keeps every pair) differs in its last bits only.
TIE_RTOL = 1e-9


def percentile_of(value: float, dist: np.ndarray) -> float:
    """Percentile (0-100) of ``value`` in the distribution ``dist`` (NaNs ignored); ties (equal to
    :data:`TIE_RTOL` relative, or 1e-12 absolute) count half."""
    dist = np.asarray(dist, dtype=np.float64)
    dist = dist[~np.isnan(dist)]
    if np.isnan(value) or len(dist) == 0:
        return np.nan
    tie = np.isclose(dist, value, rtol=TIE_RTOL, atol=1e-12)
    return float(100.0 * (np.sum((dist < value) & ~tie) + 0.5 * np.sum(tie)) / len(dist))


@dataclass(frozen=True)
class CoMovement:
    """Co-movement metrics of one grouping in one window (see module docs for the formulas)."""

    method: str
    frequency: str
    start: pd.Timestamp
    end: pd.Timestamp
    n_companies: int
    n_dropped: int
    n_groups: int
    n_singletons: int
    coverage: float
    pair_density: float
    n_pairs: int
    pair_weighted: float
    pair_weighted_ci_low: float
    pair_weighted_ci_high: float
    cluster_weighted: float
    cluster_weighted_ci_low: float
    cluster_weighted_ci_high: float
    null_draws: int
    null_pair_weighted_mean: float
    null_pair_weighted_percentile: float
    null_pair_weighted_p_value: float
    null_cluster_weighted_mean: float
    null_cluster_weighted_percentile: float
    strata: pd.DataFrame = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("strata")
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row of metrics (the size strata are in :attr:`strata`)."""
        return pd.DataFrame([self.to_dict()])


def size_strata(sums: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> pd.DataFrame:
    """Pair- and cluster-weighted means by group size stratum (groups of 2, 3-5, 6-15, 16-50, 51+)."""
    rows = []
    for name, lo, hi in SIZE_STRATA:
        sel = (sizes >= lo) & (sizes <= hi)
        pw, cw = _means(sums[sel], counts[sel])
        rows.append({"stratum": name, "n_groups": int(sel.sum()), "n_companies": int(sizes[sel].sum()),
                     "n_pairs": int(counts[sel].sum()), "pair_weighted": pw, "cluster_weighted": cw})
    return pd.DataFrame(rows)


def comovement(
    corr: CorrelationMatrix,
    labels: pd.Series,
    *,
    null_draws: int = 200,
    bootstrap_draws: int = 1000,
    seed: int = 0,
    method: str | None = None,
) -> CoMovement:
    """All co-movement metrics of grouping ``labels`` (ticker -> group label) on correlation matrix ``corr``.

    Companies of ``corr`` absent from ``labels`` (or with a missing label) are in no group; labelled tickers
    without usable returns in the window are counted in ``n_dropped``.
    """
    if null_draws < 0 or bootstrap_draws < 0:
        raise DataError("null_draws and bootstrap_draws must be >= 0")
    codes, names, n_dropped = encode_labels(corr, labels)
    k = len(names)
    n = len(corr.tickers)
    sizes = np.bincount(codes[codes >= 0], minlength=k)
    wi, wj, wg = within_pairs(codes)
    sums, counts = _group_sums(corr, wi, wj, wg, k)
    pw, cw = _means(sums, counts)
    rng = np.random.default_rng(seed)

    # bootstrap over groups with at least one valid pair
    real_groups = counts > 0
    g_sums, g_counts = sums[real_groups], counts[real_groups]
    n_g = int(real_groups.sum())
    pw_ci = cw_ci = (np.nan, np.nan)
    if n_g >= 2 and bootstrap_draws > 0:
        w = rng.multinomial(n_g, np.full(n_g, 1.0 / n_g), size=bootstrap_draws).astype(np.float64)
        boot_pw = (w @ g_sums) / (w @ g_counts)
        boot_cw = (w @ (g_sums / g_counts)) / n_g
        pw_ci = tuple(np.percentile(boot_pw, [2.5, 97.5]))
        cw_ci = tuple(np.percentile(boot_cw, [2.5, 97.5]))

    null_pw, null_cw = null_distribution(corr, codes, null_draws, rng, pairs=(wi, wj, wg))
    p_value = (
        float((1 + np.sum(null_pw >= pw)) / (1 + null_draws)) if null_draws and not np.isnan(pw) else np.nan
    )

    return CoMovement(
        method=method or str(labels.name),
        frequency=corr.frequency,
        start=corr.start,
        end=corr.end,
        n_companies=n,
        n_dropped=n_dropped,
        n_groups=int((sizes >= 2).sum()),
        n_singletons=int((sizes == 1).sum()),
        coverage=float(sizes[sizes >= 2].sum() / n),
        pair_density=float(len(wg) / corr.n_pairs),
        n_pairs=int(counts.sum()),
        pair_weighted=pw,
        pair_weighted_ci_low=float(pw_ci[0]),
        pair_weighted_ci_high=float(pw_ci[1]),
        cluster_weighted=cw,
        cluster_weighted_ci_low=float(cw_ci[0]),
        cluster_weighted_ci_high=float(cw_ci[1]),
        null_draws=null_draws,
        null_pair_weighted_mean=float(np.nanmean(null_pw)) if null_draws else np.nan,
        null_pair_weighted_percentile=percentile_of(pw, null_pw),
        null_pair_weighted_p_value=p_value,
        null_cluster_weighted_mean=float(np.nanmean(null_cw)) if null_draws else np.nan,
        null_cluster_weighted_percentile=percentile_of(cw, null_cw),
        strata=size_strata(sums, counts, sizes),
    )


@dataclass(frozen=True)
class PairedDifference:
    """Pair-weighted mean of grouping A minus that of grouping B on the same window, with a company-bootstrap
    95% CI (both groupings scored on the same resampled companies)."""

    a: str
    b: str
    difference: float
    ci_low: float
    ci_high: float
    draws: int

    @property
    def separated(self) -> bool:
        """True when the CI excludes zero; never for a CI of zero width (every draw gave the same difference:
        one within-group pair, say), which measures no uncertainty at all."""
        if not self.ci_high > self.ci_low:
            return False
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "separated": self.separated}


class _PairWeights:
    """Within-group pair structure of one grouping, for fast weighted sums over many company-weight draws.

    ``sum_{i<j, same group} w_i w_j X_ij`` for ``X`` = the correlations (``C0``, 0 where undefined) and the
    valid-pair indicator: groups of at least ``dense_min`` members as dense quadratic forms ``w_k X_k w_k^T /
    2`` (BLAS), all other pairs through one sparse upper-triangular matrix ``U`` as ``sum_i w_i (U w)_i``."""

    def __init__(self, corr: CorrelationMatrix, codes: np.ndarray, dense_min: int = 400) -> None:
        import scipy.sparse as sp

        n = len(codes)
        sizes = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0, int)
        big = np.flatnonzero(sizes >= dense_min)
        self.blocks = []
        for g in big:
            idx = np.flatnonzero(codes == g)
            self.blocks.append((idx, corr._c0[np.ix_(idx, idx)], corr._valid[np.ix_(idx, idx)]))
        small = np.where(np.isin(codes, big), -1, codes)
        wi, wj, _ = within_pairs(small)
        # float32: sums of at most ~1e6 terms, relative error ~1e-6, far below the bootstrap's own noise
        self.upper_c = sp.csr_matrix((corr._c0[wi, wj].astype(np.float32), (wi, wj)), shape=(n, n))
        self.upper_v = sp.csr_matrix((corr._valid[wi, wj].astype(np.float32), (wi, wj)), shape=(n, n))

    def sums(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted correlation sum and weighted valid-pair count per row of ``w`` (draws x N)."""
        wt = np.ascontiguousarray(w.T)
        num = np.einsum("dn,nd->d", w, self.upper_c @ wt).astype(np.float64)
        den = np.einsum("dn,nd->d", w, self.upper_v @ wt).astype(np.float64)
        for idx, c, v in self.blocks:
            wk = w[:, idx]
            num += 0.5 * np.einsum("dj,dj->d", wk @ c, wk)
            den += 0.5 * np.einsum("dj,dj->d", wk @ v, wk)
        return num, den


def paired_difference(
    corr: CorrelationMatrix, a: pd.Series, b: pd.Series, *, draws: int = 1000, seed: int = 0, chunk: int = 250
) -> PairedDifference:
    """Difference of pair-weighted means ``PW(a) - PW(b)`` with a company bootstrap.

    A draw resamples the ``N`` companies with replacement; company ``i`` drawn ``w_i`` times enters every pair
    with weight ``w_i w_j`` (a company paired with its own copy is not a pair), so the resampled pair-weighted
    mean is ``sum w_i w_j C_ij / sum w_i w_j`` over each grouping's within-group pairs. Resampling companies
    (not groups) applies to two different groupings alike, which makes the CI of the difference paired.
    """
    codes_a, _, _ = encode_labels(corr, a)
    codes_b, _, _ = encode_labels(corr, b)
    pa, pb = _PairWeights(corr, codes_a), _PairWeights(corr, codes_b)
    ones = np.ones((1, len(corr.tickers)))
    (na, da), (nb, db) = pa.sums(ones), pb.sums(ones)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = float(na[0] / da[0] - nb[0] / db[0])
    lo = hi = np.nan
    if draws > 0 and da[0] > 0 and db[0] > 0:
        rng = np.random.default_rng(seed)
        n = len(corr.tickers)
        out = np.empty(draws)
        for start in range(0, draws, chunk):
            m = min(chunk, draws - start)
            w = rng.multinomial(n, np.full(n, 1.0 / n), size=m).astype(np.float32)
            (na, da), (nb, db) = pa.sums(w), pb.sums(w)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start: start + m] = na / da - nb / db
        lo, hi = np.nanpercentile(out, [2.5, 97.5])
    return PairedDifference(str(a.name), str(b.name), diff, float(lo), float(hi), draws)
