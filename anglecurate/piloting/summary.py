"""A pilot's verdict: per arm, how fast held-out accuracy rose against the uniform baseline.

Pure functions of the curves (``pilot.parquet``). For each arm, over its seeds:

- final and best held-out accuracy (mean over seeds), and the area under the curve: the
  mean accuracy over the run (trapezoids over steps, divided by the steps);
- the share of GRPO groups (one per prompt) whose rewards did not vary, over the run: the
  prompts that gave the policy no gradient, which an order is for avoiding;
- steps and tokens (generated in training, plus what measuring an arm's order generated
  before it: :func:`budget`) to reach the *target*, the uniform arm's final accuracy (mean over
  seeds): the first crossing of the arm's mean curve, linearly interpolated between
  evaluations; None if it never gets there within the budget;
- the speedup: uniform's steps (tokens) to the target divided by the arm's. A bootstrap
  over seeds (each arm's seeds resampled with replacement, target recomputed) gives a 95%
  interval; a resample whose arm never reaches the target counts as speedup 0 (no speedup
  within the budget), so the interval stays honest about runs that fell short.

If uniform learned nothing (its final mean accuracy no higher than before training) there is
no target to reach: ``baseline_learned`` is False, and the steps to the target and every
speedup are None, not a "1.00x" from every arm sitting at the target at step 0.

The verdict names a speedup only when the interval's lower end is above 1, a slowdown only
when its upper end is below 1; otherwise it says the pilot cannot tell them apart. Every
other ordered arm is also compared with ``length`` (the confound an angle order must beat)
by the difference in area under the curve, with the same bootstrap over seeds.
"""

from __future__ import annotations

import numpy as np
import polars as pl

BOOTSTRAP = 2000
BASELINE = "uniform"
CONFOUND = "length"


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The mean over seeds: (x [K], accuracy [K]) on every evaluation point of any seed, each
    seed's curve linearly interpolated there and holding its final value past its end (the
    run stopped there). Steps are shared by every seed; generated tokens differ per seed."""
    xs = np.unique(np.concatenate([x for x, _ in curves]))
    ys = [np.interp(xs, x, y) for x, y in curves]
    return xs, np.mean(ys, axis=0)


def first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The first x where the piecewise-linear curve reaches ``target``; None if never."""
    for i in range(len(x)):
        if y[i] >= target - 1e-12:
            if i == 0:
                return float(x[0])
            x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
            return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))
    return None


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Mean accuracy over the run: the trapezoid area divided by the span."""
    span = x[-1] - x[0]
    return float(np.trapezoid(y, x) / span) if span > 0 else float(y[-1])


def budget(frame: pl.DataFrame, unit: str) -> pl.Series:
    """The x of a curve: optimizer steps, or generated tokens, which count what measuring
    the arm's order generated before training (``order_tokens``: a calibration's
    rollouts) from the first point on."""
    if unit != "tokens" or "order_tokens" not in frame.columns:
        return frame[unit]
    return frame["tokens"] + frame["order_tokens"].fill_null(0)


def zero_variance(frame: pl.DataFrame) -> float | None:
    """The share of GRPO groups without reward variance over an arm's training, the mean of
    its seeds' per-evaluation shares (None for curves from before it was kept)."""
    if "zero_variance" not in frame.columns:
        return None
    per_seed = frame.group_by("seed").agg(pl.col("zero_variance").drop_nulls().mean())["zero_variance"]
    per_seed = per_seed.drop_nulls()
    return float(per_seed.mean()) if per_seed.len() else None


def _seed_curves(frame: pl.DataFrame, arm: str, unit: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for (seed,), group in (
        frame.filter(pl.col("arm") == arm).sort("step").group_by(["seed"], maintain_order=True)
    ):
        out[int(seed)] = (
            budget(group, unit).to_numpy().astype(float),
            group["accuracy"].to_numpy().astype(float),
        )
    return out


def _speedup(base: list, arm: list) -> float | None:
    """Uniform's units to its final mean accuracy over the arm's (0: the arm never got there);
    None when no ratio is defined: uniform was at its final accuracy before training (it
    learned nothing, so there is nothing to reach), or the arm was."""
    bx, by = mean_curve(base)
    target = float(by[-1])
    reach_base = first_crossing(bx, by, target)
    if not reach_base or reach_base <= 0:
        return None
    ax, ay = mean_curve(arm)
    reach_arm = first_crossing(ax, ay, target)
    if reach_arm is None:
        return 0.0
    return reach_base / reach_arm if reach_arm > 0 else None


def bootstrap_interval(base: list, arm: list, seed: int = 0) -> tuple[float, float] | None:
    rng = np.random.Generator(np.random.PCG64(seed))
    ratios = []
    for _ in range(BOOTSTRAP):
        b = [base[i] for i in rng.integers(0, len(base), len(base))]
        a = [arm[i] for i in rng.integers(0, len(arm), len(arm))]
        r = _speedup(b, a)
        if r is not None:
            ratios.append(r)
    if not ratios:
        return None
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return float(lo), float(hi)


def auc_difference(arm: list, other: list, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """AUC of ``arm``'s mean curve minus ``other``'s, and its 95% bootstrap interval over seeds."""

    def diff(a, b):
        return auc(*mean_curve(a)) - auc(*mean_curve(b))

    rng = np.random.Generator(np.random.PCG64(seed))
    draws = [
        diff(
            [arm[i] for i in rng.integers(0, len(arm), len(arm))],
            [other[i] for i in rng.integers(0, len(other), len(other))],
        )
        for _ in range(BOOTSTRAP)
    ]
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return diff(arm, other), (float(lo), float(hi))


def summarize(frame: pl.DataFrame) -> dict:
    """``pilot.json``'s ``arms`` and ``verdict`` from the curves of finished runs."""
    arms = list(dict.fromkeys(frame["arm"].to_list()))
    result: dict = {"baseline": BASELINE if BASELINE in arms else None, "arms": {}}
    base = {unit: list(_seed_curves(frame, BASELINE, unit).values()) for unit in ("step", "tokens")}
    target = None
    if base["step"]:
        _, base_y = mean_curve(base["step"])
        target = float(base_y[-1])
        result["target_accuracy"] = target
        # No rise, no target: every arm "reaches" uniform's final accuracy at step 0.
        result["baseline_learned"] = bool(base_y[-1] > base_y[0])
    for arm in arms:
        per_unit = {unit: _seed_curves(frame, arm, unit) for unit in ("step", "tokens")}
        seeds = sorted(per_unit["step"])
        x, y = mean_curve(list(per_unit["step"].values()))
        finals = [float(c[1][-1]) for c in per_unit["step"].values()]
        entry = {
            "seeds": seeds,
            "steps": float(x[-1]),
            "initial_accuracy": float(y[0]),
            "final_accuracy": float(y[-1]),
            "final_accuracy_sd": float(np.std(finals, ddof=1)) if len(finals) > 1 else None,
            "best_accuracy": float(y.max()),
            "auc": auc(x, y),
            "tokens": float(np.mean([c[0][-1] for c in per_unit["tokens"].values()])),
            "zero_variance": zero_variance(frame.filter(pl.col("arm") == arm)),
        }
        if target is not None:
            learned = result["baseline_learned"]
            for unit, name in (("step", "steps"), ("tokens", "tokens")):
                ux, uy = mean_curve(list(per_unit[unit].values()))
                entry[f"{name}_to_target"] = first_crossing(ux, uy, target) if learned else None
                if arm != BASELINE and not learned:
                    entry[f"speedup_{name}"] = entry[f"speedup_{name}_ci95"] = None
                elif arm != BASELINE:
                    curves = list(per_unit[unit].values())
                    entry[f"speedup_{name}"] = _speedup(base[unit], curves)
                    entry[f"speedup_{name}_ci95"] = bootstrap_interval(base[unit], curves)
        if arm not in (BASELINE, CONFOUND) and CONFOUND in arms:
            confound = list(_seed_curves(frame, CONFOUND, "step").values())
            difference, interval = auc_difference(list(per_unit["step"].values()), confound)
            entry["auc_minus_length"] = difference
            entry["auc_minus_length_ci95"] = interval
        result["arms"][arm] = entry
    result["verdict"] = verdicts(result)
    return result


def _describe(arm: str, entry: dict, unit: str) -> str:
    ratio, ci = entry.get(f"speedup_{unit}"), entry.get(f"speedup_{unit}_ci95")
    if ratio is None:
        return f"{arm} was at uniform's final held-out accuracy before training: no speedup in {unit}"
    interval = f"95% interval {ci[0]:.2f}-{ci[1]:.2f} over seeds" if ci else "no interval"
    span = f"{ratio:.2f}x ({interval})"
    if ratio == 0.0:
        return (
            f"{arm} (mean over seeds) never reached uniform's final held-out accuracy within the budget "
            f"(speedup in {unit}: {interval})"
        )
    if ci and ci[0] > 1.0:
        return f"{arm} reached uniform's final held-out accuracy {span} faster in {unit}"
    if ci and ci[1] < 1.0:
        return f"{arm} was slower than uniform in {unit}: {span}"
    return f"{arm} vs uniform in {unit}: {span}; the interval includes 1, so no difference is shown"


def verdicts(result: dict) -> list[str]:
    """Plain-language lines, one per arm and unit; never more than the intervals show."""
    lines = []
    if result.get("baseline") is None:
        return ["no uniform arm: speedups need the uniform baseline (add it to --arms)"]
    base = result["arms"][BASELINE]
    learned = result.get("baseline_learned", base["final_accuracy"] > base["initial_accuracy"])
    if not learned:  # then no speedup is claimed, not even 1.00x: only what each arm did
        lines.append(
            "uniform learned nothing within the budget (final held-out accuracy "
            f"{base['final_accuracy']:.3f} vs {base['initial_accuracy']:.3f} before training): "
            "there is no target to reach, so no speedup over uniform is computed"
        )
    for arm, entry in result["arms"].items():
        if arm != BASELINE and learned:
            lines += [_describe(arm, entry, "steps"), _describe(arm, entry, "tokens")]
        elif arm != BASELINE:
            lines.append(
                f"{arm}: final held-out accuracy {entry['final_accuracy']:.3f} vs "
                f"{entry['initial_accuracy']:.3f} before training"
            )
        if "auc_minus_length" in entry:
            diff, (lo, hi) = entry["auc_minus_length"], entry["auc_minus_length_ci95"]
            span = f"{diff:+.3f} (95% interval {lo:+.3f} to {hi:+.3f} over seeds)"
            if lo > 0:
                lines.append(f"{arm} beat length: mean held-out accuracy over the run {span}")
            elif hi < 0:
                lines.append(f"{arm} did worse than length: mean held-out accuracy over the run {span}")
            else:
                lines.append(
                    f"{arm} vs length: mean held-out accuracy over the run {span}; no difference is shown"
                )
    return lines
