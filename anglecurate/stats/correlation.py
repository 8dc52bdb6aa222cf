"""Rank correlations: does a per-prompt feature predict a per-prompt target?

``validate`` asks whether a feature (angle concentration of the hidden states at one layer,
one of ~90 layer x statistic candidates) predicts a per-prompt target (say the gradient norm
of a training loss) on ~240 sampled prompts. Everything here is rank based, because neither
the feature nor the target has a meaningful scale and both have heavy tails:

- ``spearman`` / ``spearman_ci``: the association and a paired-bootstrap percentile interval,
  so a rho of 0.2 on 240 samples is reported with its uncertainty rather than as a number.
- ``auroc`` / ``auroc_ci``: the same for a yes/no target (does a prompt's group of
  rollouts have reward variance?), the Mann-Whitney form of the area under the ROC curve.
- ``partial_spearman``: the association left after ranking out covariates (prompt length
  above all: long prompts have both lower angle concentration and larger gradients, and a
  feature that only re-measures length is not worth the forward pass).
- ``max_stat_pvalues``: Westfall-Young single-step max-T permutation p-values. With ~90
  candidates the best |rho| is large by luck alone; comparing each observed |rho| with the
  permutation distribution of the *maximum* over all candidates controls the family-wise
  error rate exactly under the null of exchangeable targets, whatever the (strong)
  correlation between neighbouring layers - Bonferroni would be needlessly conservative there.
NaN means missing: pairs (rows) with NaN in any input of a computation are dropped from it.
Randomness comes from ``np.random.Generator`` built from an int seed, so results are
deterministic for a seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from scipy import stats

# Permutations are processed in blocks: bounded memory ([block, n] indices and [F, block]
# correlations) whatever n_permutations, and the stream of draws does not depend on F.
_PERMUTATION_BLOCK = 256


def _paired_finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _is_constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(np.all(a == a[0]))


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Spearman rho, two-sided p-value and pairs used, for x, y [n] float (NaN = missing).

    Returns (nan, nan, n) when fewer than 3 complete pairs remain or either side is constant.
    """
    x, y = _paired_finite(x, y)
    n = int(x.size)
    if n < 3 or _is_constant(x) or _is_constant(y):
        return float("nan"), float("nan"), n
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), n


def _spearman_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho along ``axis`` of x, y [..., n] float64 (average ranks, then Pearson).

    Vectorized statistic for ``scipy.stats.bootstrap``; nan where a side is constant.
    """
    rx = stats.rankdata(x, axis=axis)
    ry = stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    num = (rx * ry).sum(axis=axis)
    den = np.sqrt((rx * rx).sum(axis=axis) * (ry * ry).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def spearman_ci(
    x: np.ndarray, y: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Paired-bootstrap percentile interval (low, high) of Spearman rho for x, y [n] float.

    NaN pairs are dropped first; (nan, nan) when fewer than 4 pairs remain or a side is
    constant. A resample in which one side is constant (likely only with heavy ties) has
    no rho; such resamples are left out and the interval is the percentile interval of the
    finite ones ((nan, nan) if none is finite).
    """
    x, y = _paired_finite(x, y)
    if x.size < 4 or _is_constant(x) or _is_constant(y):
        return float("nan"), float("nan")
    return _paired_bootstrap_ci(x, y, _spearman_along, n_resamples, level, seed)


def _auroc_along(labels: np.ndarray, scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC along ``axis`` of labels (0/1) and scores [..., n] float64: the Mann-Whitney U
    of the positives' average ranks over n1 * n0; nan where a side has no member."""
    ranks = stats.rankdata(scores, axis=axis)
    n1 = labels.sum(axis=axis)
    n0 = labels.shape[axis] - n1
    u = (ranks * labels).sum(axis=axis) - n1 * (n1 + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (n1 * n0)


def auroc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Area under the ROC curve of ``scores`` [n] float for ``labels`` [n] (True/1 =
    positive) and the pairs used: the chance that a random positive scores above a random
    negative, ties counting half. NaN scores are dropped; nan when a class is empty."""
    y, s = _paired_finite(np.asarray(labels, dtype=np.float64), scores)
    value = _auroc_along(y, s) if y.size else np.nan
    return float(value), int(y.size)


def auroc_ci(
    labels: np.ndarray, scores: np.ndarray, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Paired-bootstrap percentile interval (low, high) of :func:`auroc`, as
    :func:`spearman_ci` draws it: (nan, nan) when fewer than 4 pairs remain or a class has
    fewer than 2 members; resamples that miss a class are left out."""
    y, s = _paired_finite(np.asarray(labels, dtype=np.float64), scores)
    if y.size < 4 or min(y.sum(), y.size - y.sum()) < 2:
        return float("nan"), float("nan")
    return _paired_bootstrap_ci(y, s, _auroc_along, n_resamples, level, seed)


def _paired_bootstrap_ci(
    x: np.ndarray, y: np.ndarray, statistic, n_resamples: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of ``statistic(x, y, axis)`` over paired resamples; resamples
    whose statistic is nan are left out ((nan, nan) if none is finite)."""
    with warnings.catch_warnings():
        # scipy warns when NaN resamples make its interval NaN; those are handled below.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (x, y),
            statistic,
            paired=True,
            vectorized=True,
            method="percentile",
            n_resamples=n_resamples,
            confidence_level=level,
            rng=np.random.default_rng(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    if not np.all(np.isfinite(dist)):
        if not np.any(np.isfinite(dist)):
            return float("nan"), float("nan")
        # The same quantile scipy takes, over the finite resamples only.
        alpha = (1.0 - level) / 2.0
        low, high = stats.quantile(dist, np.array([alpha, 1.0 - alpha]), nan_policy="omit")
    return float(low), float(high)


def partial_spearman(x: np.ndarray, y: np.ndarray, covariates: np.ndarray) -> tuple[float, float, int]:
    """Partial Spearman rho of x, y [n] given covariates [n, k] float; (rho, p, n used).

    Ranks (average for ties) of x, y and each covariate; ranked x and y are regressed on
    [1, ranked covariates] and the residuals correlated. The p-value is two-sided from
    Student t with df = n - 2 - k. Rows with NaN anywhere are dropped; (nan, nan, n) when
    df < 1 or a residual is constant. k = 0 gives ``spearman``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(covariates, dtype=np.float64).reshape(x.shape[0], -1)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y) & np.all(np.isfinite(z), axis=1)
    x, y, z = x[keep], y[keep], z[keep]
    n, k = int(x.size), z.shape[1]
    df = n - 2 - k
    if df < 1:
        return float("nan"), float("nan"), n
    design = np.column_stack([np.ones(n), stats.rankdata(z, axis=0)])
    ranked = np.column_stack([stats.rankdata(x), stats.rankdata(y)])
    coef, *_ = np.linalg.lstsq(design, ranked, rcond=None)
    resid = ranked - design @ coef
    resid -= resid.mean(axis=0)
    # Relative threshold: "constant" means nothing beyond rounding of the fit is left over.
    scale = np.linalg.norm(ranked - ranked.mean(axis=0), axis=0)
    norms = np.linalg.norm(resid, axis=0)
    if np.any(norms <= 1e-10 * np.maximum(scale, 1.0)):
        return float("nan"), float("nan"), n
    r = float(np.clip(resid[:, 0] @ resid[:, 1] / (norms[0] * norms[1]), -1.0, 1.0))
    if abs(r) == 1.0:
        return r, 0.0, n
    t = r * np.sqrt(df / (1.0 - r * r))
    return r, float(2.0 * stats.t.sf(abs(t), df)), n


def _permutations(n: int, n_permutations: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks [b, n] int64 of independent uniform permutations of range(n), fixed by seed."""
    rng = np.random.default_rng(seed)
    base = np.arange(n, dtype=np.int64)
    for start in range(0, n_permutations, _PERMUTATION_BLOCK):
        b = min(_PERMUTATION_BLOCK, n_permutations - start)
        yield rng.permuted(np.broadcast_to(base, (b, n)), axis=1)


def _standardized_ranks(a: np.ndarray) -> np.ndarray:
    # Centred, unit-norm ranks along the last axis: Pearson on ranks becomes a dot product.
    r = stats.rankdata(a, axis=-1)
    r = r - r.mean(axis=-1, keepdims=True)
    return r / np.linalg.norm(r, axis=-1, keepdims=True)


def max_stat_pvalues(
    features: np.ndarray, y: np.ndarray, *, n_permutations: int = 1000, seed: int = 0
) -> np.ndarray:
    """Family-wise (single-step max-T) permutation p-values of Spearman rho, [F] float64.

    features [F, n] float, y [n] float. p_f = (1 + #{perm: max_g |rho_g| >= |rho_f|}) /
    (n_permutations + 1), the max over all usable features of the rho with permuted y.
    Features that are entirely NaN are set aside first (else they would remove every
    sample); then samples where y or any remaining feature is NaN are dropped. Features
    constant on the remaining samples get nan and are left out of the max; all are nan
    when fewer than 3 samples remain.
    """
    feats = np.atleast_2d(np.asarray(features, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    if feats.shape[1] != y.shape[0]:
        raise ValueError(f"features {feats.shape} and y {y.shape} disagree on n")
    out = np.full(feats.shape[0], np.nan)
    present = ~np.all(np.isnan(feats), axis=1)
    cols = np.isfinite(y) & np.all(np.isfinite(feats[present]), axis=0)
    if cols.sum() < 3 or _is_constant(y[cols]):
        return out
    sub = feats[:, cols]
    usable = present & ~np.all(sub == sub[:, :1], axis=1)
    if not usable.any():
        return out
    zf = _standardized_ranks(sub[usable])  # [F', n]
    zy = _standardized_ranks(y[cols])  # [n]
    observed = np.abs(zf @ zy)  # [F']
    # 1e-12 slack: a permutation that reproduces the observed ranking must count as >=.
    threshold = observed - 1e-12
    exceed = np.zeros(observed.size, dtype=np.int64)
    for perms in _permutations(zy.size, n_permutations, seed):
        null_max = np.abs(zf @ zy[perms].T).max(axis=0)  # [b]
        exceed += (null_max[None, :] >= threshold[:, None]).sum(axis=1)
    out[usable] = (1.0 + exceed) / (n_permutations + 1.0)
    return out
