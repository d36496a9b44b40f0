"""Supervised similarity: the closed form against brute-force least squares over explicit pair products."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsae.errors import DataError
from finsae.group.similarity import l2_normalize
from finsae.group.supervised import PairSystem, SupervisedSimilarity, pair_gram, similarity_distance


def _tiny(n: int = 9, d: int = 5, seed: int = 0, nan: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = l2_normalize(np.abs(rng.normal(size=(n, d))) * (rng.random((n, d)) > 0.3))
    c = np.tanh(rng.normal(size=(n, n)))
    c = (c + c.T) / 2
    np.fill_diagonal(c, 1.0)
    if nan:
        c[0, 3] = c[3, 0] = np.nan
    return z, c


def _pair_design(z: np.ndarray, c: np.ndarray, w0: float, fixed: np.ndarray | None,
                 learned: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The explicit ordered-pair design: rows ``z_i[learned] * z_j[learned]`` for ``i != j``, targets
    ``c_ij - mean`` (0 where missing) less ``w0 * fixed_ij``, and the learned feature indices."""
    n, d = z.shape
    learned = np.arange(d) if learned is None else learned
    off = ~np.eye(n, dtype=bool) & np.isfinite(c)
    mean = c[off].mean()
    rows, y = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            rows.append(z[i, learned] * z[j, learned])
            yy = c[i, j] - mean if np.isfinite(c[i, j]) else 0.0
            if fixed is not None:
                yy -= w0 * fixed[i, j]
            y.append(yy)
    return np.array(rows), np.array(y), learned


def _brute(z: np.ndarray, c: np.ndarray, lam: float, w0: float, fixed: np.ndarray | None = None,
           learned: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Ridge with an unpenalised intercept on the explicit ordered-pair design matrix."""
    p, y, learned = _pair_design(z, c, w0, fixed, learned)
    x = np.hstack([np.ones((len(p), 1)), p])
    pen = np.diag([0.0] + [lam] * len(learned))
    rhs = x.T @ y + np.r_[0.0, np.full(len(learned), lam * w0)]
    sol = np.linalg.solve(x.T @ x + pen, rhs)
    return sol[1:], sol[0]


def test_pair_gram_equals_explicit_pair_products():
    z, _ = _tiny()
    p = np.array([z[i] * z[j] for i in range(len(z)) for j in range(len(z)) if i != j])
    np.testing.assert_allclose(pair_gram(z), p.T @ p, atol=1e-12)


@pytest.mark.parametrize("prior", ["zero", "cosine"])
@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0])
def test_closed_form_equals_brute_force_ridge(prior, alpha):
    z, c = _tiny()
    system = PairSystem.build(z)
    model = SupervisedSimilarity(alpha=alpha, prior=prior).fit(z, c, system=system)
    eig = SupervisedSimilarity(alpha=alpha, prior=prior).fit(z, c, system=PairSystem.build(z).decompose())
    np.testing.assert_allclose(eig.weights_, model.weights_, atol=1e-9)  # both solvers agree
    a_c = pair_gram(z) - system.n_pairs * np.outer(system.pbar, system.pbar)
    lam = alpha * np.trace(a_c) / z.shape[1]
    w, intercept = _brute(z, c, lam, model.prior_weight_)
    np.testing.assert_allclose(model.weights_, w, atol=1e-8)
    assert model.intercept_ == pytest.approx(intercept, abs=1e-8)
    if prior == "zero":
        assert model.prior_weight_ == 0.0


def test_prior_slope_is_least_squares_slope_on_cosine():
    z, c = _tiny(nan=False)
    system = PairSystem.build(z)
    model = SupervisedSimilarity(alpha=float("inf"), prior="cosine").fit(z, c, system=system)
    off = ~np.eye(len(z), dtype=bool)
    cos = (z @ z.T)[off]
    slope = np.polyfit(cos, c[off], 1)[0]
    assert model.prior_weight_ == pytest.approx(slope, rel=1e-10)
    np.testing.assert_allclose(model.weights_, slope)  # alpha = inf: the scaled cosine
    np.testing.assert_allclose(model.similarity(), slope * (z @ z.T), atol=1e-12)


def test_capped_features_keep_prior_weight_and_match_brute_force():
    z, c = _tiny(n=10, d=7, seed=2)
    system = PairSystem.build(z, max_features=4)
    assert len(system.learned) == 4
    model = SupervisedSimilarity(alpha=0.5, prior="cosine", max_features=4).fit(z, c, system=system)
    rest = np.setdiff1d(np.arange(7), system.learned)
    fixed = z[:, rest] @ z[:, rest].T
    a_c = pair_gram(z[:, system.learned]) - system.n_pairs * np.outer(system.pbar, system.pbar)
    lam = 0.5 * np.trace(a_c) / 4
    w, _ = _brute(z, c, lam, model.prior_weight_, fixed=fixed, learned=system.learned)
    np.testing.assert_allclose(model.weights_[system.learned], w, atol=1e-8)
    np.testing.assert_allclose(model.weights_[rest], model.prior_weight_)


def test_contributions_sum_to_similarity_and_new_rows_work():
    z, c = _tiny(n=12, d=6, seed=3)
    model = SupervisedSimilarity(alpha=0.1, prior="zero").fit(z, c)
    s = model.similarity()
    for i, j in [(0, 1), (4, 7), (11, 2)]:
        assert model.contributions(i, j).sum() == pytest.approx(s[i, j], abs=1e-12)
    new = l2_normalize(np.abs(np.random.default_rng(9).normal(size=(3, 6))))
    cross = model.similarity(new, z)
    assert cross.shape == (3, 12)
    assert cross[1, 5] == pytest.approx((model.weights_ * new[1] * z[5]).sum(), abs=1e-12)
    with pytest.raises(DataError, match="columns"):
        model.similarity(np.ones((2, 4)))
    with pytest.raises(DataError, match="out of range"):
        model.contributions(0, 40)


def test_recovers_planted_weights():
    rng = np.random.default_rng(5)
    z = l2_normalize(np.abs(rng.normal(size=(80, 6))))
    w_true = np.array([2.0, 0.0, -1.0, 0.5, 0.0, 1.0])
    c = 0.1 + (z * w_true) @ z.T
    model = SupervisedSimilarity(alpha=1e-9, prior="zero").fit(z, c)
    np.testing.assert_allclose(model.weights_, w_true, atol=1e-5)


def test_errors_name_the_problem():
    z, c = _tiny()
    with pytest.raises(DataError, match="expected"):
        SupervisedSimilarity().fit(z, c[:4, :4])
    with pytest.raises(DataError, match="unknown prior"):
        SupervisedSimilarity(prior="ones").fit(z, c)
    with pytest.raises(DataError, match="not fitted"):
        SupervisedSimilarity().similarity()


def test_similarity_distance_is_nonnegative_with_zero_diagonal():
    s = np.array([[5.0, 0.2, -0.1], [0.2, 3.0, 0.4], [-0.1, 0.4, 1.0]])
    d = similarity_distance(s)
    assert (d >= 0).all() and (np.diag(d) == 0).all()
    assert d[1, 2] < d[0, 1] < d[0, 2]


def test_system_similarity_equals_weighted_dot_product():
    z, c = _tiny(n=10, d=7, seed=4)
    system = PairSystem.build(z, max_features=3)
    w, _, w0 = system.solve(c, 0.3, "cosine")
    full = (z * w) @ z.T
    got = system.similarity(w)
    off = ~np.eye(10, dtype=bool)
    np.testing.assert_allclose(got[off], full[off], atol=1e-12)
    np.testing.assert_allclose(system.similarity(w, rows=np.array([2, 5]))[:, 0], full[[2, 5], 0], atol=1e-12)
    sub = PairSystem.build(z[:6], learned=system.learned)  # a subset of companies, the same learned features
    np.testing.assert_array_equal(sub.learned, system.learned)


def test_weighted_pair_and_group_explanations_sum_to_the_similarity():
    from finsae.explain.groups import explain_group_weighted, explain_pair_weighted

    z, c = _tiny(n=12, d=6, seed=6)
    model = SupervisedSimilarity(alpha=0.2, prior="cosine").fit(z, c)
    s = model.similarity()
    pair = explain_pair_weighted(z, model.weights_, 2, 7, top=6)
    assert pair["contribution"].sum() == pytest.approx(s[2, 7], abs=1e-12)
    assert pair["contribution"].is_monotonic_decreasing
    np.testing.assert_allclose(pair.sort_values("latent")["contribution"],
                               model.contributions(2, 7)[pair.sort_values("latent")["latent"]])
    members = np.zeros(12, dtype=bool)
    members[[1, 4, 5, 9]] = True
    grp = explain_group_weighted(z, model.weights_, members, top=6)
    idx = np.flatnonzero(members)
    within = np.mean([s[i, j] for i in idx for j in idx if i != j])
    assert grp["contribution"].sum() == pytest.approx(within, abs=1e-12)
    assert grp["excess"].is_monotonic_decreasing
    with pytest.raises(DataError, match="one per latent"):
        explain_pair_weighted(z, model.weights_[:3], 0, 1)


@pytest.mark.parametrize("cap", [None, 3])
def test_subset_system_equals_a_fresh_build(cap):
    z, c = _tiny(n=14, d=6, seed=8)
    full = PairSystem.build(z, max_features=cap)
    rows = np.array([0, 2, 3, 5, 8, 9, 12])
    sub = full.subset(rows)
    fresh = PairSystem.build(z[rows], learned=full.learned if cap else None)
    np.testing.assert_allclose(sub.a_c, fresh.a_c, atol=1e-10)
    cs = c[np.ix_(rows, rows)]
    for prior in ("zero", "cosine"):
        np.testing.assert_allclose(sub.solve(cs, 0.5, prior)[0], fresh.solve(cs, 0.5, prior)[0], atol=1e-9)


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_largest_first_equals_stable_argsort_with_ties(k):
    """Sparse rows (many exact zeros and repeated values, -0.0 among them) and rows with fewer non-zero
    entries than k: the order must be the stable argsort's, ties by column."""
    from finsae.group.similarity import largest_first

    rng = np.random.default_rng(4)
    v = rng.choice([0.0, -0.0, 0.5, 1.0, -1.0, 2.0], size=(40, 12), p=[0.4, 0.1, 0.2, 0.1, 0.1, 0.1])
    v[:5] = rng.normal(size=(5, 12))
    v[5] = 0.0
    got = largest_first(v, k)
    assert np.array_equal(got, np.argsort(-v, axis=1, kind="stable")[:, : min(k, 12)])


def _brute_nonneg(z: np.ndarray, c: np.ndarray, lam: float, w0: float, fixed: np.ndarray | None = None,
                  learned: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The non-negative ridge by scipy's bounded least squares on the explicit ordered-pair design, with the
    penalty as extra rows ``sqrt(lam) (w - w0)`` and the intercept unbounded."""
    from scipy.optimize import lsq_linear

    p, y, learned = _pair_design(z, c, w0, fixed, learned)
    m = len(learned)
    x = np.vstack([np.hstack([np.ones((len(p), 1)), p]),
                   np.hstack([np.zeros((m, 1)), np.sqrt(lam) * np.eye(m)])])
    t = np.r_[y, np.full(m, np.sqrt(lam) * w0)]
    res = lsq_linear(x, t, bounds=(np.r_[-np.inf, np.zeros(m)], np.full(m + 1, np.inf)), tol=1e-14,
                     lsmr_tol="auto", max_iter=10_000, method="bvls")
    return res.x[1:], res.x[0]


@pytest.mark.parametrize("prior", ["zero", "cosine"])
@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0])
def test_nonneg_fit_equals_bounded_least_squares_on_explicit_pairs(prior, alpha):
    z, c = _tiny(n=10, d=6, seed=11)
    signed = SupervisedSimilarity(alpha=alpha, prior=prior).fit(z, c)
    model = SupervisedSimilarity(alpha=alpha, prior=prior, nonneg=True).fit(z, c)
    assert (model.weights_ >= 0).all()
    if alpha == 0.01:
        assert (signed.weights_ < 0).any()  # the constraint binds on this problem
    system = PairSystem.build(z)
    lam = alpha * system.trace / z.shape[1]
    w, intercept = _brute_nonneg(z, c, lam, model.prior_weight_)
    np.testing.assert_allclose(model.weights_, w, atol=1e-8)
    assert model.intercept_ == pytest.approx(intercept, abs=1e-8)
    assert model.prior_weight_ == (0.0 if prior == "zero" else max(signed.prior_weight_, 0.0))


def test_nonneg_capped_features_match_bounded_least_squares():
    z, c = _tiny(n=10, d=7, seed=2)
    system = PairSystem.build(z, max_features=4)
    w, intercept, w0 = system.solve(c, 0.05, "cosine", nonneg=True)
    rest = np.setdiff1d(np.arange(7), system.learned)
    fixed = z[:, rest] @ z[:, rest].T
    lam = 0.05 * system.trace / 4
    wb, ib = _brute_nonneg(z, c, lam, w0, fixed=fixed, learned=system.learned)
    np.testing.assert_allclose(w[system.learned], wb, atol=1e-8)
    np.testing.assert_allclose(w[rest], w0)
    assert intercept == pytest.approx(ib, abs=1e-8) and w0 >= 0


def test_nonneg_quadratic_equals_scipy_nnls_from_any_start_and_on_fallback(caplog):
    import logging

    from scipy.linalg import cholesky, solve_triangular
    from scipy.optimize import nnls

    from finsae.group.supervised import nonneg_quadratic

    rng = np.random.default_rng(3)
    for n in (1, 5, 40, 120):
        a = rng.normal(size=(n + 10, n))
        h = a.T @ a + 0.1 * np.eye(n)
        g = rng.normal(size=n)
        r = cholesky(h)
        want, _ = nnls(r, solve_triangular(r, g, trans="T"), maxiter=50 * n)
        scale = np.abs(want).max() + 1e-12
        for free in (None, np.zeros(n, dtype=bool), rng.random(n) > 0.5):
            np.testing.assert_allclose(nonneg_quadratic(h, g, free) / scale, want / scale, atol=1e-10)
        # one active-set step from "all free" does not settle: the nnls fallback gives the same solution
        with caplog.at_level(logging.INFO, logger="finsae.group.supervised"):
            caplog.clear()
            got = nonneg_quadratic(h, g, max_iter=1)
        np.testing.assert_allclose(got / scale, want / scale, atol=1e-10)
        if n == 120:
            assert "nnls" in caplog.text
    np.testing.assert_array_equal(nonneg_quadratic(np.eye(3), -np.ones(3)), np.zeros(3))  # all at the bound
    with pytest.raises(DataError, match="expected"):
        nonneg_quadratic(np.eye(3), np.ones(4))


def test_nonneg_contributions_are_shared_features_and_sum_to_similarity():
    from finsae.explain.groups import explain_group_weighted

    z, c = _tiny(n=12, d=6, seed=6)
    model = SupervisedSimilarity(alpha=0.05, prior="zero", nonneg=True).fit(z, c)
    s = model.similarity()
    for i, j in [(0, 1), (3, 8)]:
        terms = model.contributions(i, j)
        assert (terms >= 0).all() and terms.sum() == pytest.approx(s[i, j], abs=1e-12)
        assert (terms[(z[i] == 0) | (z[j] == 0)] == 0).all()  # only features both companies have
    members = np.zeros(12, dtype=bool)
    members[[1, 4, 5, 9]] = True
    grp = explain_group_weighted(z, model.weights_, members, top=6)
    assert (grp["contribution"] >= 0).all()
    # a positive excess needs the members to share the feature more than a typical pair does
    assert ((grp["excess"] <= 0) | (grp["contribution"] > 0)).all()


@pytest.mark.parametrize("flip", [False, True])
def test_tagged_rhs_equals_untagged_and_is_shared_where_w0_is(flip):
    """``rhs(tag=...)`` keeps the returns' side per (tag, w0): every (prior, sign) gets exactly the numbers of
    an untagged call, in either call order; the signed and non-negative fits share one where their w0 does
    (always for the zero prior; for the cosine prior when its slope mu >= 0), and not otherwise."""
    z, c = _tiny(n=12, d=6, seed=5)
    if flip:  # as drawn, correlations fall with the cosine (mu < 0: the non-negative w0 = 0 differs from mu);
        c = -c  # negated, they rise with it (mu > 0: one w0 for both signs)
        np.fill_diagonal(c, 1.0)
    system = PairSystem.build(z, max_features=3)  # with fixed features: y depends on w0
    combos = [("cosine", False), ("cosine", True), ("zero", True), ("zero", False)]
    for order in (combos, combos[::-1]):
        tagged = PairSystem.build(z, max_features=3)
        got = {key: tagged.rhs(c, *key, tag="fit") for key in order}
        for (prior, nonneg), (b, ybar, w0) in got.items():
            b0, ybar0, w00 = system.rhs(c, prior, nonneg)
            assert np.array_equal(b, b0) and ybar == ybar0 and w0 == w00
        mu = got[("cosine", False)][2]
        assert (mu < 0) != flip  # both branches are exercised
        assert got[("zero", False)][0] is got[("zero", True)][0]
        assert (got[("cosine", False)][0] is got[("cosine", True)][0]) == (mu >= 0)
        assert (got[("cosine", True)][0] is got[("zero", True)][0]) == (mu < 0)  # both w0 = 0
    other = PairSystem.build(z, max_features=3)
    other.rhs(c, "zero", tag="fit")
    b_other, _, _ = other.rhs(np.zeros_like(c), "zero", tag="other")  # another tag: computed afresh
    assert np.array_equal(b_other, system.rhs(np.zeros_like(c), "zero")[0])


def test_group_evidence_order_puts_shared_latents_before_absent_ones():
    """``order="evidence"``: the same rows and figures as ``order="excess"``, re-ordered so that latents the
    members share (w > 0, excess > 0) come before latents they lack (w < 0, excess > 0), then the rest, each
    by excess; the ``evidence`` column says which is which."""
    from finsae.explain.groups import explain_group_weighted

    rng = np.random.default_rng(11)
    z = l2_normalize(np.abs(rng.normal(size=(30, 8))) * (rng.random((30, 8)) > 0.4))
    w = np.array([2.0, -3.0, 1.0, -1.0, 0.5, -2.0, 0.0, 4.0])
    members = np.zeros(30, dtype=bool)
    members[:6] = True
    z[:6, 1] = z[:6, 5] = 0.0  # the members lack latents 1 and 5, whose weights are negative
    z = l2_normalize(z)
    by_excess = explain_group_weighted(z, w, members, top=8)
    by_evidence = explain_group_weighted(z, w, members, top=8, order="evidence")
    key = ["latent", "weight", "contribution", "typical", "excess", "evidence"]
    pd.testing.assert_frame_equal(by_excess.sort_values("latent")[key].reset_index(drop=True),
                                  by_evidence.sort_values("latent")[key].reset_index(drop=True))
    ev = by_evidence["evidence"].tolist()
    assert ev == sorted(ev, key=["shared", "absent", "none"].index)  # tiers in order
    assert {1, 5} <= set(by_evidence.loc[by_evidence["evidence"] == "absent", "latent"])
    assert (by_evidence.loc[by_evidence["evidence"] == "absent", "contribution"] <= 0).all()
    for _, tier in by_evidence.groupby("evidence"):
        assert tier["excess"].is_monotonic_decreasing
    shared = by_evidence["evidence"] == "shared"
    assert ((by_evidence["weight"] > 0) & (by_evidence["excess"] > 0)).eq(shared).all()
    with pytest.raises(DataError, match="order"):
        explain_group_weighted(z, w, members, order="size")
