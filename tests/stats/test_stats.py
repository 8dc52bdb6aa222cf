"""Tests for anglecurate.stats (correlation, sampling, isotonic): checked against scipy
and closed forms on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from anglecurate.stats import correlation as st
from anglecurate.stats import isotonic, sampling


def _correlated(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    return x, y


# --- spearman -----------------------------------------------------------------------------


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(60), 1)  # rounding makes ties
    y = np.round(x + rng.standard_normal(60), 1)
    rho, p, n = st.spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert n == 60
    assert rho == pytest.approx(ref.statistic, abs=1e-14)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)


def test_spearman_drops_nan_pairs():
    x, y = _correlated(50, 0.5, 2)
    x[[3, 7]] = np.nan
    y[[7, 20, 21]] = np.nan
    keep = np.isfinite(x) & np.isfinite(y)
    rho, p, n = st.spearman(x, y)
    ref = stats.spearmanr(x[keep], y[keep])
    assert n == 46
    assert rho == pytest.approx(ref.statistic, abs=1e-14)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)


def test_spearman_degenerate():
    rho, p, n = st.spearman(np.array([1.0, 2.0, np.nan]), np.array([1.0, 3.0, 2.0]))
    assert np.isnan(rho) and np.isnan(p) and n == 2
    rho, p, n = st.spearman(np.ones(10), np.arange(10.0))
    assert np.isnan(rho) and np.isnan(p) and n == 10


# --- spearman_ci --------------------------------------------------------------------------


def test_vectorized_statistic_matches_spearmanr_on_resamples():
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal(40), 1)
    y = np.round(x + rng.standard_normal(40), 1)
    idx = rng.integers(0, 40, size=(5, 40))
    got = st._spearman_along(x[idx], y[idx], axis=-1)
    assert got.shape == (5,)
    for row, value in zip(idx, got, strict=True):
        assert value == pytest.approx(stats.spearmanr(x[row], y[row]).statistic, abs=1e-12)


def test_ci_contains_estimate_and_narrows_with_n():
    x_small, y_small = _correlated(40, 0.5, 4)
    x_big, y_big = _correlated(400, 0.5, 4)
    lo_s, hi_s = st.spearman_ci(x_small, y_small, n_resamples=500, seed=0)
    lo_b, hi_b = st.spearman_ci(x_big, y_big, n_resamples=500, seed=0)
    assert lo_s < st.spearman(x_small, y_small)[0] < hi_s
    assert lo_b < st.spearman(x_big, y_big)[0] < hi_b
    assert hi_b - lo_b < 0.6 * (hi_s - lo_s)
    # A narrower level gives a narrower interval.
    lo_80, hi_80 = st.spearman_ci(x_small, y_small, n_resamples=500, level=0.8, seed=0)
    assert lo_s < lo_80 and hi_80 < hi_s


def test_ci_deterministic_and_nan_pairs_dropped():
    x, y = _correlated(60, 0.3, 5)
    a = st.spearman_ci(x, y, n_resamples=300, seed=7)
    assert a == st.spearman_ci(x, y, n_resamples=300, seed=7)
    assert a != st.spearman_ci(x, y, n_resamples=300, seed=8)
    xn = np.concatenate([x, [np.nan, 1.0]])
    yn = np.concatenate([y, [2.0, np.nan]])
    assert st.spearman_ci(xn, yn, n_resamples=300, seed=7) == a


def test_ci_degenerate_inputs():
    assert np.isnan(st.spearman_ci(np.arange(3.0), np.arange(3.0))).all()
    assert np.isnan(st.spearman_ci(np.ones(20), np.arange(20.0))).all()


@pytest.mark.filterwarnings("ignore::scipy.stats.DegenerateDataWarning")  # from the reference call
def test_ci_ignores_constant_resamples():
    # x has one distinct value out of five: a good share of resamples are constant in x.
    x = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    y = np.array([0.1, 0.4, 0.2, 0.3, 0.9, 0.5])
    lo, hi = st.spearman_ci(x, y, n_resamples=400, seed=1)
    assert np.isfinite(lo) and np.isfinite(hi) and -1 <= lo <= hi <= 1
    res = stats.bootstrap(
        (x, y),
        st._spearman_along,
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=400,
        rng=np.random.default_rng(1),
    )
    dist = res.bootstrap_distribution
    assert np.isnan(dist).any()
    finite = dist[np.isfinite(dist)]
    assert lo == pytest.approx(np.quantile(finite, 0.025))
    assert hi == pytest.approx(np.quantile(finite, 0.975))


# --- partial_spearman ---------------------------------------------------------------------


def test_partial_spearman_one_covariate_closed_form():
    rng = np.random.default_rng(6)
    z = np.round(rng.standard_normal(80), 1)
    x = z + rng.standard_normal(80)
    y = np.exp(z) + 0.5 * x + rng.standard_normal(80)
    r_xy, r_xz, r_yz = (stats.spearmanr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    expected = (r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    rho, p, n = st.partial_spearman(x, y, z[:, None])
    assert n == 80
    assert rho == pytest.approx(expected, abs=1e-10)
    t = expected * np.sqrt((80 - 3) / (1 - expected**2))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 80 - 3), rel=1e-8)


def test_partial_spearman_no_covariates_is_spearman():
    x, y = _correlated(30, 0.4, 7)
    rho, p, n = st.partial_spearman(x, y, np.empty((30, 0)))
    ref = st.spearman(x, y)
    assert n == ref[2]
    assert rho == pytest.approx(ref[0], abs=1e-12)
    assert p == pytest.approx(ref[1], rel=1e-10)


def test_partial_spearman_removes_common_cause():
    rng = np.random.default_rng(8)
    z = rng.standard_normal(3000)
    x = z + 0.3 * rng.standard_normal(3000)
    y = 2 * z + 0.6 * rng.standard_normal(3000)
    assert st.spearman(x, y)[0] > 0.8
    rho, _, _ = st.partial_spearman(x, y, z[:, None])
    assert abs(rho) < 0.1


def test_partial_spearman_nan_rows_and_degenerate():
    rng = np.random.default_rng(9)
    z = rng.standard_normal((40, 2))
    x = z[:, 0] + rng.standard_normal(40)
    y = z[:, 1] + x + rng.standard_normal(40)
    x2, z2 = x.copy(), z.copy()
    x2[0] = np.nan
    z2[5, 1] = np.nan
    keep = np.ones(40, dtype=bool)
    keep[[0, 5]] = False
    assert st.partial_spearman(x2, y, z2) == pytest.approx(st.partial_spearman(x[keep], y[keep], z[keep]))
    assert st.partial_spearman(x2, y, z2)[2] == 38
    # df = n - 2 - k < 1
    rho, p, n = st.partial_spearman(x[:4], y[:4], z[:4])
    assert np.isnan(rho) and np.isnan(p) and n == 4
    # x is a monotone function of the covariate: nothing is left after ranking it out.
    rho, p, n = st.partial_spearman(np.exp(z[:, 0]), y, z[:, :1])
    assert np.isnan(rho) and np.isnan(p) and n == 40


# --- max_stat_pvalues ---------------------------------------------------------------------


def _reference_max_t(features: np.ndarray, y: np.ndarray, n_permutations: int, seed: int) -> np.ndarray:
    observed = np.abs([stats.spearmanr(f, y).statistic for f in features])
    perms = np.concatenate(list(st._permutations(y.size, n_permutations, seed)))
    null_max = np.array([max(abs(stats.spearmanr(f, y[p]).statistic) for f in features) for p in perms])
    return (1 + (null_max[None, :] >= observed[:, None] - 1e-12).sum(axis=1)) / (n_permutations + 1)


def test_max_stat_matches_bruteforce_reference():
    rng = np.random.default_rng(10)
    y = np.round(rng.standard_normal(25), 1)
    features = np.round(rng.standard_normal((6, 25)) + 0.4 * y, 1)
    got = st.max_stat_pvalues(features, y, n_permutations=300, seed=3)
    np.testing.assert_allclose(got, _reference_max_t(features, y, 300, 3), rtol=0, atol=1e-15)


def test_max_stat_planted_feature_and_conservative():
    rng = np.random.default_rng(11)
    n = 120
    y = rng.standard_normal(n)
    noise = rng.standard_normal((50, n))
    planted = y + 0.7 * rng.standard_normal(n)
    features = np.vstack([noise, planted])
    p = st.max_stat_pvalues(features, y, n_permutations=500, seed=0)
    assert p.shape == (51,) and p.dtype == np.float64
    assert p[-1] < 0.01
    assert np.median(p[:-1]) > 0.5
    assert (p[:-1] < 0.05).sum() <= 1
    # The per-feature permutation p (same permutations) is never larger, and is smaller somewhere.
    perms = np.concatenate(list(st._permutations(n, 500, 0)))
    ry = stats.rankdata(y)
    per_feature = np.empty(51)
    for i, f in enumerate(features):
        observed = abs(stats.spearmanr(f, y).statistic)
        null = np.abs(st._spearman_along(np.broadcast_to(f, perms.shape), ry[perms]))
        per_feature[i] = (1 + (null >= observed - 1e-12).sum()) / 501
    assert np.all(p >= per_feature)
    assert np.any(p > per_feature + 0.1)


def test_max_stat_deterministic_for_seed():
    rng = np.random.default_rng(12)
    y = rng.standard_normal(30)
    features = rng.standard_normal((8, 30)) + 0.3 * y
    a = st.max_stat_pvalues(features, y, n_permutations=200, seed=5)
    np.testing.assert_array_equal(a, st.max_stat_pvalues(features, y, n_permutations=200, seed=5))
    assert not np.array_equal(a, st.max_stat_pvalues(features, y, n_permutations=200, seed=6))


def test_max_stat_nan_and_constant_features():
    rng = np.random.default_rng(13)
    y = rng.standard_normal(40)
    good = rng.standard_normal((4, 40)) + 0.5 * y
    features = np.vstack([good[:2], np.full(40, np.nan), good[2:], np.ones(40)])
    features[0, 3] = np.nan  # drops sample 3 for every feature
    y_nan = y.copy()
    y_nan[10] = np.nan  # drops sample 10
    p = st.max_stat_pvalues(features, y_nan, n_permutations=200, seed=1)
    assert np.isnan(p[2]) and np.isnan(p[5])
    keep = np.ones(40, dtype=bool)
    keep[[3, 10]] = False
    expected = st.max_stat_pvalues(good[:, keep], y[keep], n_permutations=200, seed=1)
    np.testing.assert_array_equal(p[[0, 1, 3, 4]], expected)
    assert np.isnan(st.max_stat_pvalues(np.ones((3, 10)), y[:10])).all()


# --- split_halves / stratified_sample -----------------------------------------------------


def test_split_halves_balanced_and_pairs_split():
    rng = np.random.default_rng(14)
    ranks = rng.choice(100_000, size=101, replace=False)
    mask = sampling.split_halves(ranks, seed=0)
    assert mask.dtype == bool and mask.shape == (101,)
    assert abs(int(mask.sum()) - int((~mask).sum())) <= 1
    by_rank = mask[np.argsort(ranks)]
    pairs = by_rank[:100].reshape(50, 2)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert 10 < pairs[:, 0].sum() < 40  # random order within pairs, not a fixed pattern
    np.testing.assert_array_equal(mask, sampling.split_halves(ranks, seed=0))
    assert not np.array_equal(mask, sampling.split_halves(ranks, seed=1))
    # The odd one out lands in either half depending on the seed.
    last = np.argmax(ranks)
    assert {bool(sampling.split_halves(ranks, seed=s)[last]) for s in range(20)} == {True, False}


def test_stratified_sample_one_per_stratum():
    n_rows, n = 1000, 37
    got = sampling.stratified_sample(n_rows, n, seed=0)
    assert got.dtype == np.int64 and got.shape == (n,)
    assert np.all(np.diff(got) > 0)  # sorted and distinct
    bounds = [(i * n_rows) // n for i in range(n + 1)]
    for i, pos in enumerate(got):
        assert bounds[i] <= pos < bounds[i + 1]
    np.testing.assert_array_equal(got, sampling.stratified_sample(n_rows, n, seed=0))
    assert not np.array_equal(got, sampling.stratified_sample(n_rows, n, seed=1))
    # Uniform within a stratum: both ends of stratum 0 ([0, 3)) get drawn across seeds.
    assert {int(sampling.stratified_sample(10, 3, seed=s)[0]) for s in range(40)} == {0, 1, 2}
    np.testing.assert_array_equal(sampling.stratified_sample(5, 9, seed=0), np.arange(5))


# --- isotonic_residuals -------------------------------------------------------------------


def test_isotonic_decreasing_fit():
    rng = np.random.default_rng(15)
    lengths = rng.integers(10, 500, size=300)  # repeats: ties
    values = 100.0 / lengths + 0.01 * rng.standard_normal(300)
    resid, info = isotonic.isotonic_residuals(values, lengths)
    assert info["direction"] == "decreasing" and info["n"] == 300 and info["r2"] > 0.9
    fit = values - resid
    order = np.argsort(lengths, kind="stable")
    assert np.all(np.diff(fit[order]) <= 1e-12)
    for length in np.unique(lengths):
        assert np.ptp(fit[lengths == length]) < 1e-12  # ties share one fitted value
    # Against scipy on the per-length means directly.
    uniq, inv, counts = np.unique(lengths, return_inverse=True, return_counts=True)
    means = np.array([values[lengths == u].mean() for u in uniq])
    ref = optimize.isotonic_regression(means, weights=counts, increasing=False).x
    np.testing.assert_allclose(resid, values - ref[inv], atol=1e-12)
    sse = np.sum(resid**2)
    assert info["r2"] == pytest.approx(1 - sse / np.sum((values - values.mean()) ** 2))


def test_isotonic_increasing_nan_and_degenerate():
    lengths = np.array([1, 2, 2, 3, 4, 5, 6])
    values = np.array([0.0, 1.0, 3.0, np.nan, 2.5, 4.0, 5.0])
    resid, info = isotonic.isotonic_residuals(values, lengths)
    assert info["direction"] == "increasing" and info["n"] == 6
    assert np.isnan(resid[3]) and np.isfinite(np.delete(resid, 3)).all()
    fit = values - resid
    # lengths 2 (mean 2.0) and 4 (2.5) are in order; length 2's two rows share 2.0.
    np.testing.assert_allclose(np.delete(fit, 3), [0.0, 2.0, 2.0, 2.5, 4.0, 5.0], atol=1e-12)
    one, info = isotonic.isotonic_residuals(np.array([np.nan, 3.0]), np.array([1, 2]))
    assert info["direction"] == "none" and info["n"] == 1
    assert np.isnan(one[0]) and one[1] == 0.0
    flat, info = isotonic.isotonic_residuals(np.full(4, 2.0), np.arange(4))
    assert info["r2"] == 0.0 and np.all(flat == 0.0)
