"""The report's calibration section: what `anglecurate calibrate` measured, drawn against rank.

When ``OUT/calibrate.json`` and ``OUT/calibrate.parquet`` exist, the report opens with it,
since it is the first thing to look at before training on an order: the measured pass rate,
and the share of GRPO groups with no reward variance (every completion passed, or every one
failed: no gradient), against the position a row takes in

- the angle order (the score, highest first: where GAIN-RL's window starts), and
- the calibrated order (``p_pass``, highest first: easiest first), each measured row placed
  by its held-out prediction, from a model that never saw it, so the curve is not the fit
  reading its own training rows back.

Binned: the measured rows sorted by position and cut into groups of about equal size, each
drawn at its mean position. Beside it, the predictor's held-out quality against the
baselines. Nothing here rolls out or fits; the section shows what calibrate wrote.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.calibration.sample import binned_by_position
from anglecurate.reporting.plotting import PAGE_WIDTH, finish, integer_ticks, pyplot, save, styled

JSON, PARQUET, PNG = "calibrate.json", "calibrate.parquet", "calibration.png"
ORDERS = (  # column of calibrate.parquet, label, colour, marker, width (the first wider: it shows
    # around the second where the two coincide)
    ("angle_position", "angle order (score, highest first)", "#5e3c99", "s", 3.2),
    ("calibrated_position", "calibrated order (p_pass, easiest first; held-out)", "#1b7837", "o", 1.6),
)
ROWS_PER_BIN = 25  # about this many measured rows a point, 3 to 10 points


def read_calibration(ranking: Path) -> tuple[dict, pl.DataFrame] | None:
    """calibrate.json and calibrate.parquet of ``ranking``, or None when it was not calibrated."""
    path, rows = ranking / JSON, ranking / PARQUET
    if not (path.is_file() and rows.is_file()):
        return None
    try:
        summary = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}); rerun `anglecurate calibrate` or delete it"
        ) from None
    frame = pl.read_parquet(rows, columns=["pass_rate", "has_variance", *(o[0] for o in ORDERS)])
    return summary, frame


def bins_for(rows: int) -> int:
    return int(np.clip(rows // ROWS_PER_BIN, 3, 10))


@styled
def draw_calibration(path: Path, summary: dict, rows: pl.DataFrame) -> Path:
    """``calibration.png``: measured pass rate (left) and the share of zero-variance groups
    (right) against rank position, binned, one line per order."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 4.4), sharex=True)
    rate = rows["pass_rate"].to_numpy().astype(float)
    zero = (~rows["has_variance"].to_numpy()).astype(float)
    of = int(summary["sample"]["of"])
    bins = bins_for(rows.height)
    handles = []
    for column, label, color, marker, width in ORDERS:
        centres, (rates, zeros), _ = binned_by_position(
            rows[column].to_numpy().astype(float), [rate, zero], bins
        )
        for ax, values in zip(axes, (rates, zeros), strict=True):
            (line,) = ax.plot(
                centres, values, color=color, marker=marker, lw=width, ms=3 + width, label=label
            )
        handles.append(line)
    for ax, values, name in (
        (axes[0], rate, "measured pass rate"),
        (axes[1], zero, "share of zero-variance groups"),
    ):
        mean = ax.axhline(values.mean(), color="#777777", lw=1, ls=":", label="mean over the sample")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(-0.02 * of, 1.02 * max(of, 1))  # a held-out prediction below every row stands at N
        integer_ticks(ax.xaxis, nbins=6)
        ax.set_xlabel("rank position (0 = first in the order)")
        ax.set_ylabel(name)
    axes[0].set_title("measured pass rate along each order")
    axes[1].set_title("groups with no reward variance (no gradient)")
    k = summary["options"]["samples_per_prompt"]
    notes = [
        f"{rows.height:,} measured rows of {of:,} ranked, {k} completions each; each point is the mean of "
        f"about {rows.height // bins:,} rows sorted by their position in that order",
        "calibrated positions come from each row's held-out prediction (a fit that never saw it)",
    ]
    finish(fig, [*handles, mean], [h.get_label() for h in handles] + [mean.get_label()], ncol=3, notes=notes)
    return save(fig, path)


def _ci(value, interval) -> str:
    if value is None:
        return "n/a"
    lo, hi = interval or (None, None)
    show = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    return f"{value:.2f} [{show(lo)}, {show(hi)}]"


def calibration_html(summary: dict, figure_html: str | None) -> str:
    """The section: the verdict, what was measured and what it cost, the held-out quality
    table, then calibration.png."""
    fit, m = summary["fit"], summary["measured"]
    cost = summary["cost"]["recorded"]
    k = summary["options"]["samples_per_prompt"]
    if fit["recommended"]:
        verdict = (
            f"The predictor is recommended: its held-out Spearman interval lies above {fit['reference']}'s. "
            f"Rank by it with <code>anglecurate rank OUT --by p_pass</code> (easiest first) or "
            "<code>--by learnability</code>."
        )
    else:
        verdict = (
            f"The predictor is not recommended: {html.escape(str(fit['reason']))}. Its p_pass is written "
            "all the same; the measured pass rates below do not depend on it."
        )
    about = (
        f"{m['rows']:,} rows rolled out ({k} completions each, temperature "
        f"{summary['options']['temperature']:g}, reward {html.escape(str(summary['options']['reward']))}): "
        f"mean pass rate {m['mean_pass_rate']:.3f}; {m['zero_variance_groups']:,} groups with no reward "
        f"variance ({m['all_failed']:,} all failed, {m['all_passed']:,} all passed). Cost: "
        f"{cost['generated_tokens']:,} generated tokens, {cost['generation_seconds']:,.0f} s of generation."
    )
    names = {"predictor": "predictor (every stored feature)", "n_question": "n_question alone"}
    names["score"] = "angle score alone"
    rows = "".join(
        f'<tr><td>{html.escape(names.get(name, name))}</td><td class="num">{q["features"]}</td>'
        f'<td class="num">{_ci(q["spearman"], q["spearman_ci"])}</td>'
        f'<td class="num">{_ci(q["auroc_variance"], q["auroc_variance_ci"])}</td></tr>'
        for name, q in fit["quality"].items()
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("model", "features", "held-out Spearman [95%]", "held-out AUROC, group has variance [95%]")
    )
    table = (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    )
    note = (
        f"Out of {fit.get('folds', '?')} held-out folds: Spearman of the predicted with the measured pass "
        "rate, and the AUROC of the predicted learnability, p (1 - p), for a group with reward variance; "
        "intervals by paired bootstrap. Each baseline is the same model fitted on that one feature."
    )
    return (
        '<section id="calibration"><h2>Calibration (<code>anglecurate calibrate</code>)</h2>'
        f'<p class="why">{verdict}</p><p class="note">{html.escape(about)}</p>{table}'
        f'<p class="note">{html.escape(note)}</p>{figure_html or ""}</section>'
    )
