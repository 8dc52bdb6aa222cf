"""The learnability predictor (anglecurate.stats.learnability) on synthetic rows whose truth
is known, and the AUROC it reports (anglecurate.stats.correlation)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anglecurate.base.errors import UserError
from anglecurate.stats import correlation as st
from anglecurate.stats import learnability as lb

# A short grid and few resamples keep each fit to about a second on 2 CPU cores.
FAST = {"Cs": (0.01, 0.1, 1.0), "n_resamples": 300}


def _rows(n: int = 1200, layers: int = 6, signal: float = 2.5, seed: int = 0):
    """Stored-like features of n rows; the true pass rate is sigmoid(signal * c_intra of
    layer 2) (signal 0: every feature is noise). Returns (features, truth, baselines)."""
    rng = np.random.default_rng(seed)
    intra = rng.standard_normal((n, layers))
    inter = rng.standard_normal((n, layers))
    n_question = rng.integers(4, 300, n)
    features, names = lb.prefill_features(intra, inter, n_question, n_question + 40, list(range(layers)))
    assert names[2] == "c_intra[2]" and features.shape == (n, 2 * layers + 2)
    truth = 1.0 / (1.0 + np.exp(-signal * intra[:, 2] + 0.3))
    baselines = {"n_question": n_question.astype(float), "score": intra[:, -1] + inter[:, -1]}
    return features, truth, baselines


def _measure(truth: np.ndarray, sample: int, k: int, seed: int = 1):
    """k rollouts on ``sample`` random rows: (pass_rate [n] NaN elsewhere, k [n] 0 elsewhere)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(truth.size, sample, replace=False)
    rate = np.full(truth.size, np.nan)
    trials = np.zeros(truth.size, dtype=np.int64)
    trials[rows] = k
    rate[rows] = rng.binomial(k, truth[rows]) / k
    return rate, trials


def test_a_pass_rate_driven_by_one_feature_is_recovered_and_recommended():
    features, truth, baselines = _rows()
    rate, k = _measure(truth, 200, 8)
    fit = lb.fit_learnability(features, rate, k, baselines, **FAST)
    q = fit.quality["predictor"]
    assert q.rows == 200 and q.features == features.shape[1]
    assert q.spearman > 0.7 and q.spearman_ci[0] > 0.6  # held out: no row predicted by itself
    assert fit.quality["n_question"].spearman_ci[1] < q.spearman_ci[0]
    assert fit.recommended and fit.reason is None
    # every row gets p_pass, in the true order, and learnability is p (1 - p)
    assert fit.p_pass.shape == truth.shape and np.all((fit.p_pass > 0) & (fit.p_pass < 1))
    assert st.spearman(fit.p_pass, truth)[0] > 0.9
    assert fit.learnability == pytest.approx(fit.p_pass * (1 - fit.p_pass))
    # groups with reward variance are told apart from all-pass and all-fail ones
    assert q.auroc > 0.7
    assert np.isnan(fit.held_out[k == 0]).all() and np.isfinite(fit.held_out[k > 0]).all()
    summary = fit.to_dict()
    assert summary["recommended"] is True and summary["sampled_rows"] == 200
    assert set(summary["quality"]) == {"predictor", "n_question", "score"}


def test_features_that_carry_nothing_are_not_recommended_with_the_reason():
    features, truth, baselines = _rows(signal=0.0)
    rate, k = _measure(truth, 200, 8)
    fit = lb.fit_learnability(features, rate, k, baselines, **FAST)
    assert not fit.recommended
    assert fit.reason.startswith("held-out Spearman") and "is not above n_question's" in fit.reason
    assert "\n" not in fit.reason
    assert fit.quality["predictor"].spearman_ci[0] < 0.15
    assert np.isfinite(fit.p_pass).all()  # the predictions are still written


def test_length_that_predicts_is_a_baseline_the_predictor_must_beat():
    # The pass rate follows question length alone (longer: harder): n_question's fit learns
    # the sign, so the angle features cannot beat it and the predictor is refused.
    features, _, baselines = _rows()
    truth = 1.0 / (1.0 + np.exp(0.03 * (baselines["n_question"] - 150)))
    rate, k = _measure(truth, 200, 8)
    fit = lb.fit_learnability(features, rate, k, baselines, **FAST)
    assert fit.quality["n_question"].spearman > 0.6
    assert not fit.recommended and "n_question's" in fit.reason


def test_rollouts_count_as_binomial_trials():
    # Identical features: the fit is the pooled pass rate, successes over rollouts (20/200),
    # not the mean of per-row pass rates (0.5). A row with 18 rollouts weighs 9 of one with 2.
    n = 40
    features = np.zeros((n, 3))
    k = np.where(np.arange(n) < 20, 2, 18)
    rate = np.where(np.arange(n) < 20, 1.0, 0.0)
    fit = lb.fit_learnability(features, rate, k, {"n_question": np.zeros(n)}, **FAST)
    assert fit.p_pass == pytest.approx(np.full(n, 0.1), abs=1e-4)  # lbfgs tolerance


def test_a_binomial_row_is_its_k_bernoulli_rollouts():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4))
    k = rng.integers(1, 9, 30).astype(float)
    s = np.floor(rng.random(30) * (k + 1))
    (model,) = list(lb._path(x, s, k, [0.5]))
    # the same rollouts one per row: k_i rows of x_i, s_i of them successes
    reps = np.repeat(np.arange(30), k.astype(int))
    wins = np.concatenate([np.arange(int(kk)) < ss for kk, ss in zip(k, s, strict=True)])
    (bernoulli,) = list(lb._path(x[reps], wins.astype(float), np.ones(reps.size), [0.5]))
    # the imputer and scaler see other rows (repeated), so compare predictions on their own scale
    direct = model.logistic.coef_ / model.scale[-1].scale_
    repeated = bernoulli.logistic.coef_ / bernoulli.scale[-1].scale_
    assert direct == pytest.approx(repeated, rel=0.05)


def test_the_same_seed_gives_the_same_fit_and_another_seed_other_folds():
    features, truth, baselines = _rows(n=400)
    rate, k = _measure(truth, 120, 4)
    a = lb.fit_learnability(features, rate, k, baselines, seed=7, **FAST)
    b = lb.fit_learnability(features, rate, k, baselines, seed=7, **FAST)
    c = lb.fit_learnability(features, rate, k, baselines, seed=8, **FAST)
    assert a.to_dict() == b.to_dict()
    assert np.array_equal(a.p_pass, b.p_pass) and np.array_equal(a.held_out, b.held_out, equal_nan=True)
    assert not np.array_equal(a.held_out, c.held_out, equal_nan=True)


def test_a_pass_rate_that_never_varies_is_refused_in_one_line():
    features, truth, baselines = _rows(n=300)
    _, k = _measure(truth, 60, 8)
    rate = np.where(k > 0, 0.0, np.nan)  # the model solves none: every group has no variance
    fit = lb.fit_learnability(features, rate, k, baselines, **FAST)
    assert not fit.recommended
    assert fit.reason.startswith("every sampled row has pass rate 0:")
    assert fit.p_pass == pytest.approx(np.zeros(300)) and fit.C is not None


def test_too_few_rows_and_bad_inputs_are_user_errors():
    features, truth, baselines = _rows(n=50)
    rate, k = _measure(truth, 9, 8)
    with pytest.raises(UserError, match="9 rows have rollouts; the predictor needs at least 10"):
        lb.fit_learnability(features, rate, k, baselines, **FAST)
    rate, k = _measure(truth, 20, 8)
    rate[np.flatnonzero(k)[0]] = 1.5
    with pytest.raises(UserError, match="a pass rate is a mean reward in"):
        lb.fit_learnability(features, rate, k, baselines, **FAST)


def test_missing_features_are_imputed_not_fatal():
    features, truth, baselines = _rows(n=600)
    features[::3, 0] = np.nan  # a one-token question has no c_intra
    features[:, 1] = np.nan  # a layer whose value is never defined
    rate, k = _measure(truth, 150, 8)
    fit = lb.fit_learnability(features, rate, k, baselines, **FAST)
    assert np.isfinite(fit.p_pass).all() and fit.recommended


# --- auroc --------------------------------------------------------------------------------


def test_auroc_matches_scikit_learn_with_ties_and_drops_nan():
    rng = np.random.default_rng(5)
    labels = rng.random(80) < 0.4
    scores = np.round(labels + rng.standard_normal(80), 1)
    value, n = st.auroc(labels, scores)
    assert n == 80 and value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    scores[[1, 2]] = np.nan
    keep = np.isfinite(scores)
    assert st.auroc(labels, scores)[0] == pytest.approx(roc_auc_score(labels[keep], scores[keep]))
    assert np.isnan(st.auroc(np.ones(5), np.arange(5.0))[0])


def test_auroc_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(6)
    labels = rng.random(120) < 0.5
    scores = labels + rng.standard_normal(120)
    lo, hi = st.auroc_ci(labels, scores, n_resamples=400, seed=1)
    assert lo < st.auroc(labels, scores)[0] < hi
    assert (lo, hi) == st.auroc_ci(labels, scores, n_resamples=400, seed=1)
    assert st.auroc_ci(np.array([1, 0, 0, 0, 0]), np.arange(5.0)) != st.auroc_ci(
        labels, scores
    )  # one positive: no interval
    assert all(np.isnan(st.auroc_ci(np.array([1, 0, 0, 0, 0]), np.arange(5.0))))
