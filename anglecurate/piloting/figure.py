"""``pilot.png``: held-out accuracy against optimizer steps and against generated tokens,
the mean over seeds per arm with a band from the lowest to the highest seed; under them,
when the curves record it, the share of GRPO groups whose rewards did not vary (no gradient)
and the mean training reward, per evaluation interval, against steps: what decides whether
an order helps GRPO.

Read at a glance: steps tick whole numbers, the accuracy axis never leaves [0, 1], and
arms whose mean curves coincide (a tiny pilot often learns nothing in every arm) stay
visible: each arm has its own marker, the earlier of two identical curves is drawn wider
underneath, and a note under the plot names them. A measured arm's curve starts at the
tokens its rollouts generated before training; where that lies beyond the longest curve's
own span (a calibration of every row costs many runs' worth), a linear axis would squeeze
every other arm into its first sliver, so the tokens axis turns logarithmic past the first
evaluation's tokens, and says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.piloting.summary import budget, mean_curve
from anglecurate.reporting.plotting import PAGE_WIDTH, finish, integer_ticks, pyplot, styled
from anglecurate.storage.atomic import atomic_write

COLORS = {
    "uniform": "#333333",
    "gainrl": "#1b7837",
    "gainrl-open": "#66bd63",
    "length": "#c2410c",
    "reverse": "#5e3c99",
    "calibrated": "#2166ac",
    "pass-rate": "#b2182b",
}
MARKERS = {
    "uniform": "o",
    "gainrl": "s",
    "gainrl-open": "^",
    "length": "D",
    "reverse": "v",
    "calibrated": "P",
    "pass-rate": "X",
}
# The training panels: a curve column per evaluation interval (null at step 0), its label.
TRAINING = (("zero_variance", "groups with zero reward variance"), ("train_reward", "mean training reward"))
PANELS = (("step", "optimizer steps"), ("tokens", "generated tokens"))
MIN_SPAN = 0.1  # the accuracy axis shows at least this much, so a flat curve is not magnified


def coincide(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Two (x, y) curves over the same x span that agree everywhere on it (one hides the other)."""
    (ax, ay), (bx, by) = a, b
    if not (np.isclose(ax[0], bx[0]) and np.isclose(ax[-1], bx[-1])):
        return False
    grid = np.union1d(ax, bx)
    return bool(np.allclose(np.interp(grid, ax, ay), np.interp(grid, bx, by), atol=1e-9))


def _curves(
    frame: pl.DataFrame, arm: str, unit: str, column: str = "accuracy"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each seed's (x, ``column``) of ``arm``, the rows where ``column`` is null left out."""
    rows = frame.filter(pl.col("arm") == arm, pl.col(column).is_not_null()).sort("step")
    return [
        (budget(g, unit).to_numpy().astype(float), g[column].to_numpy().astype(float))
        for _, g in rows.group_by("seed", maintain_order=True)
        if g[column].drop_nulls().len()
    ]


def accuracy_limits(lo: float, hi: float) -> tuple[float, float]:
    """y limits around [lo, hi] with a margin, at least ``MIN_SPAN`` tall, within [0, 1]."""
    pad = max(0.02, 0.08 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    if hi - lo < MIN_SPAN:
        mid = (lo + hi) / 2
        lo, hi = mid - MIN_SPAN / 2, mid + MIN_SPAN / 2
    shift = max(0.0, -lo) - max(0.0, hi - 1.0)  # slide back inside [0, 1], then cut
    return max(0.0, lo + shift), min(1.0, hi + shift)


@styled
def pilot_figure(frame: pl.DataFrame, title: str):
    """The two panels from ``pilot.parquet``'s rows, as a matplotlib figure."""
    plt = pyplot()
    training = [(c, label) for c, label in TRAINING if c in frame.columns and frame[c].drop_nulls().len()]
    rows = 2 if training else 1
    fig, grid = plt.subplots(rows, 2, figsize=(PAGE_WIDTH, 4.6 * rows), squeeze=False)
    axes = grid[0]
    axes[1].sharey(axes[0])
    axes[1].tick_params(labelleft=False)
    arms = list(dict.fromkeys(frame["arm"].to_list()))
    lo, hi, notes = 1.0, 0.0, []
    for ax, (unit, label) in zip(axes, PANELS, strict=True):
        per_arm = {arm: _curves(frame, arm, unit) for arm in arms}
        means = {arm: mean_curve(c) for arm, c in per_arm.items()}
        # arms whose curve an arm drawn later hides: drawn wider (and larger markers) the more it hides
        hidden = {a: sum(coincide(means[a], means[b]) for b in arms[i + 1 :]) for i, a in enumerate(arms)}
        groups = _groups(arms, means)
        for k, arm in enumerate(arms):
            x, y = means[arm]
            stacked = np.array([np.interp(x, cx, cy) for cx, cy in per_arm[arm]])
            n = len(per_arm[arm])
            line_x, line_y, marked = _evaluations_marked(x, y, per_arm[arm])
            ax.plot(
                line_x,
                line_y,
                color=COLORS.get(arm, f"C{k}"),
                lw=1.8 + 2.2 * hidden[arm],
                marker=MARKERS.get(arm, "o") if len(marked) <= 40 else None,
                markevery=marked,
                ms=6 + 3 * hidden[arm],
                mfc="white",
                mew=1.3,
                clip_on=False,  # a curve at 0 or 1 sits on the frame, whole
                zorder=3 + k,
                label=f"{arm} ({n} seed{'s' if n > 1 else ''})",
            )
            if n > 1:
                ax.fill_between(x, stacked.min(0), stacked.max(0), color=COLORS.get(arm), alpha=0.15, lw=0)
            lo, hi = min(lo, float(stacked.min())), max(hi, float(stacked.max()))
        notes += [(label, " = ".join(g)) for g in groups]
        ax.set_xlabel(label)
        integer_ticks(ax.xaxis, nbins=6)  # room for "12,000" at 10 pt
        if unit == "tokens":
            _log_past_offsets(ax, [c for curves in per_arm.values() for c in curves])
    axes[0].set_ylim(*accuracy_limits(lo, hi))
    axes[0].set_ylabel("held-out accuracy")
    for ax, (column, label) in zip(grid[1] if training else (), training, strict=False):
        _training_panel(ax, frame, arms, column, label)
    if training and len(training) < 2:
        grid[1][1].set_visible(False)
    fig.suptitle(title, fontsize=11.5)
    finish(fig, *axes[0].get_legend_handles_labels(), ncol=len(arms), notes=_same_notes(notes))
    return fig


def _evaluations_marked(
    x: np.ndarray, y: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The mean curve (x [K], y [K]) with a marker per evaluation, not per vertex.

    On the tokens axis each seed evaluates at its own token count, so the mean curve has a
    vertex for every seed's evaluation (3 seeds x 7 evaluations = 21 markers, stacked where a
    curve is steep). Each evaluation's mean x over seeds is added as a vertex (on the line, so
    its shape is unchanged) and only those are marked. Returns (x [K'], y [K'], indices)."""
    lengths = {len(cx) for cx, _ in curves}
    if len(curves) < 2 or len(lengths) != 1:
        return x, y, list(range(len(x)))
    at = np.mean([cx for cx, _ in curves], axis=0)
    grid = np.union1d(x, at)
    return grid, np.interp(grid, x, y), np.searchsorted(grid, at).tolist()


def _log_past_offsets(ax, curves: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Symmetric-log tokens axis (linear up to the first evaluation's tokens) when some curve
    starts beyond the longest curve's span: the measured arms' rollouts would otherwise
    leave the other arms a sliver of the panel."""
    from matplotlib.ticker import StrMethodFormatter, SymmetricalLogLocator

    if not curves:
        return
    start = max(float(x[0]) for x, _ in curves)
    span = max(float(x[-1] - x[0]) for x, _ in curves)
    positive = [float(v) for x, _ in curves for v in x if v > 0]
    if span <= 0 or start <= span or not positive:
        return
    threshold = min(positive)
    ax.set_xscale("symlog", linthresh=threshold, linscale=0.5)
    ax.xaxis.set_major_locator(SymmetricalLogLocator(linthresh=threshold, base=10, subs=(1.0, 3.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel(f"{ax.get_xlabel()} (log scale past {threshold:,.0f})")


def _training_panel(ax, frame: pl.DataFrame, arms: list[str], column: str, label: str) -> None:
    """One training signal per evaluation interval (a share in [0, 1]) against steps, the
    mean over seeds per arm."""
    for k, arm in enumerate(arms):
        curves = _curves(frame, arm, "step", column)
        if not curves:
            continue
        x, y = mean_curve(curves)
        marker = MARKERS.get(arm, "o") if len(x) <= 40 else None
        ax.plot(x, y, color=COLORS.get(arm, f"C{k}"), lw=1.6, marker=marker, ms=5, mfc="white", mew=1.2,
                clip_on=False, zorder=3 + k)  # fmt: skip
    if column == "zero_variance":  # a share; a custom reward's mean may leave [0, 1]
        ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel(f"{label}\n(since the previous evaluation)")
    integer_ticks(ax.xaxis, nbins=6)


def _same_notes(same: list[tuple[str, str]]) -> list[str]:
    """The notes naming coinciding curves: once for both panels when they agree."""
    if not same:
        return []
    panels = {group: [p for p, g in same if g == group] for _, group in same}
    lines = [
        f"identical mean curves {'in both panels' if len(p) == 2 else 'against ' + p[0]}: {group}"
        for group, p in panels.items()
    ]
    return lines + ["(the earlier arm is drawn wider underneath; each arm has its own marker)"]


def _groups(arms: list[str], means: dict) -> list[list[str]]:
    """Arms whose mean curves coincide, in arm order, each group of two or more."""
    groups: list[list[str]] = []
    for arm in arms:
        for group in groups:
            if coincide(means[group[0]], means[arm]):
                group.append(arm)
                break
        else:
            groups.append([arm])
    return [g for g in groups if len(g) > 1]


@styled  # saved under the same settings it was drawn with
def draw_pilot(frame: pl.DataFrame, path: Path, title: str) -> Path:
    """Draw the two panels from ``pilot.parquet``'s rows into ``path`` (atomically)."""
    fig = pilot_figure(frame, title)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    pyplot().close(fig)
    return path
