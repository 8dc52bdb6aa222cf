"""The learnability predictor: each row's pass rate, predicted from what scoring stores.

A GRPO group learns only when its k rollouts do not all earn the same reward: zero reward
variance means zero advantage and no gradient. For a prompt the policy solves with
probability p, the expected variance of one rollout's 0/1 reward is p (1 - p), so

    learnability = p_pass * (1 - p_pass)

is highest at p = 1/2 and zero for prompts the model always or never solves. Measuring p
takes k rollouts per row; here a model fitted on a few hundred rows with measured pass
rates predicts it for every row from the prefill features scoring stores: each scored
layer's ``c_intra`` and ``c_inter``, ``n_question`` and ``n_tokens`` (both as log1p, their
tails are long), optionally a pooled hidden state (``score --embed``). Every feature is
standardised (median-imputed first: a one-token question has no ``c_intra``) on the
training rows of each fit.

The model is an L2-penalised logistic regression (scikit-learn) with each row's k rollouts
as binomial trials: the row enters as a success with weight s and a failure with weight
k - s. Chosen over ridge on a transform of the pass rate because

- it is the likelihood of what was measured: a row with 16 rollouts weighs twice one
  with 8, and a pass rate of 0 or 1 (most rows, on a task too hard or too easy) needs no
  continuity correction, where an empirical logit of 0/8 is an arbitrary large number;
- its prediction is a probability in (0, 1), so p (1 - p) needs no clipping.

The penalty C is chosen from a grid by an inner K-fold on binomial deviance. Quality is
measured out of fold: every sampled row is predicted by a model (C chosen again inside)
that never saw it, K folds, seeded. On those held-out predictions:

- Spearman of predicted with measured pass rate, with a paired-bootstrap interval;
- AUROC of the predicted learnability for "the group has reward variance" (0 < p < 1).

The same model fitted on one feature alone gives each baseline's numbers (``n_question``,
the angle score): through the same fit a baseline's sign is learned too, so a length
that predicts failure counts as much as one that predicts success. The predictor is
**recommended** only when its Spearman interval lies wholly above the reference
baseline's (``n_question``: the confound any prefill signal must beat); otherwise
``reason`` says why in one line. ``p_pass`` for every row comes from a model fitted on all
sampled rows, recommended or not.

What it is not: a measurement. It ranks rows by what a linear model of the prefill sees;
rows unlike the sample (another source, other lengths) are extrapolated.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from anglecurate.base.errors import UserError
from anglecurate.stats.correlation import auroc, auroc_ci, spearman, spearman_ci

# Inverse penalties tried by the inner fold, strongest first (ties go to the strongest).
DEFAULT_CS = tuple(float(c) for c in np.logspace(-3, 2, 11))
INNER_FOLDS = 3
_EPS = 1e-9  # the deviance's clip: a constant model of an all-fail fold predicts exactly 0


@dataclass(frozen=True)
class Quality:
    """One predictor's held-out quality on the sampled rows (nan where undefined)."""

    name: str
    features: int
    spearman: float
    spearman_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]
    rows: int

    def to_dict(self) -> dict:
        return {
            "features": self.features,
            "spearman": _json_float(self.spearman),
            "spearman_ci": [_json_float(v) for v in self.spearman_ci],
            "auroc_variance": _json_float(self.auroc),
            "auroc_variance_ci": [_json_float(v) for v in self.auroc_ci],
            "rows": self.rows,
        }


@dataclass(frozen=True)
class LearnabilityFit:
    """What :func:`fit_learnability` found.

    p_pass, learnability: [n] float64 for every row (the model fitted on all sampled rows).
    held_out: [n] float64, each sampled row's out-of-fold predicted pass rate, NaN elsewhere.
    quality: ``predictor`` and each baseline, by name.
    """

    p_pass: np.ndarray
    learnability: np.ndarray
    held_out: np.ndarray
    quality: dict[str, Quality]
    recommended: bool
    reason: str | None
    C: float | None  # the penalty of the final fit; None when the pass rate did not vary
    reference: str
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-row arrays): for ``calibrate.json``."""
        return {
            "model": "binomial logistic regression (L2), standardised features",
            "recommended": self.recommended,
            "reason": self.reason,
            "reference": self.reference,
            "C": self.C,
            "quality": {name: q.to_dict() for name, q in self.quality.items()},
            **self.settings,
        }


def prefill_features(
    c_intra_layers: np.ndarray,
    c_inter_layers: np.ndarray,
    n_question: np.ndarray,
    n_tokens: np.ndarray,
    layers: Sequence[int],
    embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The feature matrix [n, 2 L + 2 (+ H)] float64 and its column names.

    c_intra_layers, c_inter_layers: [n, L] float (NaN allowed), the stored per-layer values
    in ``layers`` order; n_question, n_tokens: [n] int; embeddings: [n, H] float or None.
    Lengths enter as log1p; nothing is standardised here (each fit does it on its rows).
    """
    intra = np.asarray(c_intra_layers, dtype=np.float64)
    inter = np.asarray(c_inter_layers, dtype=np.float64)
    n = intra.shape[0]
    if intra.shape != inter.shape or intra.shape != (n, len(layers)):
        raise ValueError(f"c_intra {intra.shape} and c_inter {inter.shape} must be [n, {len(layers)}]")
    lengths = np.log1p(np.column_stack([n_question, n_tokens]).astype(np.float64))
    blocks = [intra, inter, lengths]
    names = [f"c_intra[{i}]" for i in layers] + [f"c_inter[{i}]" for i in layers]
    names += ["log1p n_question", "log1p n_tokens"]
    if embeddings is not None:
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings {emb.shape} must be [{n}, hidden]")
        blocks.append(emb)
        names += [f"embed[{j}]" for j in range(emb.shape[1])]
    return np.column_stack(blocks), names


def fit_learnability(
    features: np.ndarray,
    pass_rate: np.ndarray,
    k: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    *,
    reference: str = "n_question",
    folds: int = 5,
    seed: int = 0,
    n_resamples: int = 1000,
    level: float = 0.95,
    Cs: Sequence[float] = DEFAULT_CS,
) -> LearnabilityFit:
    """Fit the predictor on the sampled rows, measure it out of fold, predict every row.

    Args:
        features: [n, F] float, every row (NaN allowed); :func:`prefill_features` builds it.
        pass_rate: [n] float in [0, 1], the mean reward of a row's rollouts; NaN for rows
            not sampled.
        k: [n] int, rollouts per row; 0 for rows not sampled.
        baselines: name -> [n] float, each fitted alone the same way (``n_question``, the
            angle ``score``); ``reference`` names the one the predictor must beat.
        folds: held-out folds over the sampled rows; seed: their split, the inner folds'
            and the bootstrap's; n_resamples, level: the bootstrap intervals.

    Raises UserError for fewer than ``2 * folds`` sampled rows or inconsistent inputs.
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    rate = np.asarray(pass_rate, dtype=np.float64).reshape(-1)
    trials = np.asarray(k).reshape(-1)
    _check_inputs(x, rate, trials, baselines, reference, folds)
    sampled = np.flatnonzero(trials > 0)
    kk = trials[sampled].astype(np.float64)
    measured = rate[sampled]
    successes = measured * kk
    settings = {
        "folds": folds,
        "seed": seed,
        "bootstrap": n_resamples,
        "level": level,
        "sampled_rows": int(sampled.size),
        "rollouts": int(kk.sum()),
        "features": int(x.shape[1]),
    }

    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    candidates = {"predictor": x}
    candidates |= {name: np.asarray(b, dtype=np.float64).reshape(n, 1) for name, b in baselines.items()}
    # Hundreds of small fits: one BLAS thread each runs them ~3x faster than a thread pool
    # that spins up per call (0.009 s against 0.03 s per fit of 420 x 62, 2 CPU cores).
    with threadpool_limits(1):
        held = {name: _held_out(m[sampled], successes, kk, Cs, folds, seed) for name, m in candidates.items()}
        final = _fit_cv(x[sampled], successes, kk, Cs, seed)
        p_pass = final.predict(x)
    has_variance = (measured > 0) & (measured < 1)
    quality = {
        name: predictor_quality(
            name, candidates[name].shape[1], p, measured, has_variance, n_resamples, level, seed
        )
        for name, p in held.items()
    }
    recommended, reason = _verdict(quality["predictor"], quality[reference], reference, measured)
    held_out = np.full(n, np.nan)
    held_out[sampled] = held["predictor"]
    return LearnabilityFit(
        p_pass=p_pass,
        learnability=p_pass * (1.0 - p_pass),
        held_out=held_out,
        quality=quality,
        recommended=recommended,
        reason=reason,
        C=final.C,
        reference=reference,
        settings=settings,
    )


def _check_inputs(x, rate, trials, baselines, reference, folds) -> None:
    n = x.shape[0]
    if x.ndim != 2 or rate.shape != (n,) or trials.shape != (n,):
        raise ValueError(f"features {x.shape}, pass_rate {rate.shape} and k {trials.shape} disagree on n")
    if reference not in baselines:
        raise ValueError(f"reference {reference!r} is not among the baselines {sorted(baselines)}")
    for name, values in baselines.items():
        if np.asarray(values).reshape(-1).shape != (n,):
            raise ValueError(f"baseline {name!r} has shape {np.shape(values)}, expected [{n}]")
    if np.any(trials < 0) or not np.all(np.equal(np.mod(trials, 1), 0)):
        raise UserError("rollouts per row (k) must be whole numbers, 0 for rows not sampled")
    sampled = trials > 0
    bad = sampled & ~((rate >= 0) & (rate <= 1))
    if bad.any():
        raise UserError(
            f"row {int(np.flatnonzero(bad)[0])} has pass rate {rate[bad][0]} with k > 0; "
            "a pass rate is a mean reward in [0, 1]"
        )
    if folds < 2:
        raise UserError(f"the held-out folds must be 2 or more, got {folds}")
    if sampled.sum() < 2 * folds:
        raise UserError(
            f"{int(sampled.sum())} rows have rollouts; the predictor needs at least {2 * folds} "
            f"({folds} held-out folds of 2 or more)"
        )


class _Model:
    """A fitted predictor: imputer and scaler fitted on the training rows, then the logistic
    regression; or a constant when every training rollout earned the same reward."""

    def __init__(self, scale=None, logistic=None, constant: float | None = None, C: float | None = None):
        self.scale, self.logistic, self.constant, self.C = scale, logistic, constant, C

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.logistic is None:
            return np.full(x.shape[0], self.constant)
        return self.logistic.predict_proba(self.scale.transform(x))[:, 1]


def _path(x: np.ndarray, successes: np.ndarray, k: np.ndarray, Cs: Sequence[float]):
    """Binomial logistic fits of ``x`` at each C in turn: yields a :class:`_Model` per C,
    valid until the next one is drawn (they share one warm-started regression).

    Row i enters as a success with weight s_i and a failure with weight k_i - s_i (the
    binomial likelihood, exactly). The imputer and scaler are fitted once (they do not
    depend on C) and each fit starts from the previous C's coefficients."""
    total = successes.sum()
    if total <= 0 or total >= k.sum():
        for C in Cs:
            yield _Model(constant=float(total / k.sum()), C=C)
        return
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scale = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
    z = scale.fit_transform(x)
    m = x.shape[0]
    rows = np.concatenate([z, z])
    labels = np.concatenate([np.ones(m), np.zeros(m)])
    weights = np.concatenate([successes, k - successes])
    keep = weights > 0
    logistic = LogisticRegression(max_iter=2000, warm_start=True)
    for C in Cs:
        logistic.set_params(C=C)
        with warnings.catch_warnings():
            # A weak penalty on separable rows stops at max_iter; the inner fold then
            # prefers a stronger one, so the warning says nothing the choice does not weigh.
            warnings.simplefilter("ignore", ConvergenceWarning)
            logistic.fit(rows[keep], labels[keep], sample_weight=weights[keep])
        yield _Model(scale, logistic, C=C)


def _deviance(p: np.ndarray, successes: np.ndarray, k: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return float(-(successes * np.log(p) + (k - successes) * np.log1p(-p)).sum())


def _splits(m: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=min(folds, m), shuffle=True, random_state=seed).split(np.zeros(m)))


def _fit_cv(x: np.ndarray, successes: np.ndarray, k: np.ndarray, Cs: Sequence[float], seed: int) -> _Model:
    """Choose C by an inner K-fold on binomial deviance, then fit on all of ``x``."""
    chosen = Cs[0]
    if len(Cs) > 1 and x.shape[0] >= 2 * INNER_FOLDS:
        loss = np.zeros(len(Cs))
        for train, test in _splits(x.shape[0], INNER_FOLDS, seed + 1):
            for j, model in enumerate(_path(x[train], successes[train], k[train], Cs)):
                loss[j] += _deviance(model.predict(x[test]), successes[test], k[test])
        chosen = Cs[int(np.argmin(loss))]
    return next(_path(x, successes, k, [chosen]))


def _held_out(x, successes, k, Cs, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predicted pass rate [m] of each sampled row (C chosen inside each fold)."""
    out = np.empty(x.shape[0])
    for train, test in _splits(x.shape[0], folds, seed):
        out[test] = _fit_cv(x[train], successes[train], k[train], Cs, seed).predict(x[test])
    return out


def predictor_quality(
    name: str,
    n_features: int,
    predicted: np.ndarray,
    measured: np.ndarray,
    has_variance: np.ndarray,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Quality:
    """How well predicted pass rates [m] float64 order measured ones [m] float64: Spearman, and
    the AUROC of the expected group variance p (1 - p) for ``has_variance`` [m] bool, each with
    its paired-bootstrap interval."""
    rho, _, rows = spearman(predicted, measured)
    variance = predicted * (1.0 - predicted)
    area, _ = auroc(has_variance, variance)
    return Quality(
        name=name,
        features=n_features,
        spearman=rho,
        spearman_ci=spearman_ci(predicted, measured, n_resamples=n_resamples, level=level, seed=seed),
        auroc=area,
        auroc_ci=auroc_ci(has_variance, variance, n_resamples=n_resamples, level=level, seed=seed),
        rows=rows,
    )


def _verdict(pred: Quality, ref: Quality, reference: str, measured: np.ndarray) -> tuple[bool, str | None]:
    if np.all(measured == measured[0]):
        return False, (
            f"every sampled row has pass rate {measured[0]:g}: there is no order to predict "
            "(try other rows, more rollouts or a temperature that varies the outcome)"
        )
    lo, hi = pred.spearman_ci
    ref_lo, ref_hi = ref.spearman_ci
    if not np.isfinite(lo):
        return False, "the predictor's held-out predictions do not vary; its Spearman is undefined"
    # Above the reference's interval, and above 0 (a reference that cannot be ranked by,
    # a constant length, has no interval to beat).
    bar = max(ref_hi, 0.0) if np.isfinite(ref_hi) else 0.0
    if lo <= bar:
        return False, (
            f"held-out Spearman {pred.spearman:.2f} [{lo:.2f}, {hi:.2f}] is not above "
            f"{reference}'s {ref.spearman:.2f} [{ref_lo:.2f}, {ref_hi:.2f}]" + (" or 0" if bar == 0.0 else "")
        )
    return True, None


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
