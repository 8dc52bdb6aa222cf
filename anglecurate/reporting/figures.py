"""The report's figures: each drawing function makes one PNG from arrays that
:mod:`anglecurate.reporting.write` read (and :mod:`anglecurate.reporting.summaries` reduced) and returns its
path. Style, sizes and shared layout are :mod:`anglecurate.reporting.plotting`'s; matplotlib
is imported inside :func:`pyplot` (Agg backend), so importing anglecurate never pulls it in.

Read at a glance: layer axes tick whole layers only, legends and notes sit under the plots,
and a figure says in words when it drew a sample or had too few rows for a line."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.reporting import summaries
from anglecurate.reporting.plotting import (
    NOTE_SIZE,
    PAGE_WIDTH,
    binned_median,
    finish,
    integer_ticks,
    pyplot,
    styled,
    wide,
)
from anglecurate.reporting.plotting import save as _save
from anglecurate.reporting.plotting import scatter as _scatter
from anglecurate.stats.correlation import spearman

TOP, BOTTOM, ALL = "#1b7837", "#c2410c", "#333333"  # top decile, bottom decile, all rows
COMPONENT_COLORS = {"intra": "#2166ac", "inter": "#b2182b", "combined": "#5e3c99"}
HALF_COLORS = {"choose": "#2166ac", "hold_out": "#d95f02"}
MARK_COLORS = {  # validate_layers' marked layers, none a component's colour
    "recommended": "#e6ab02",
    "chosen on first half": "#66a61e",
    "ranking layer": "#777777",
}


def fmt_rho(rho: float, n: int) -> str:
    return (
        f"Spearman \u03c1 = {rho:+.3f} (n = {n:,})"
        if rho == rho
        else f"Spearman \u03c1 undefined (n = {n:,})"
    )


def file_stem(column: str, taken: set[str]) -> str:
    """``by_<column>`` made safe as a file name and an HTML id, unique among ``taken``."""
    stem = "by_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", column).strip("._") or "column")
    out, k = stem, 2
    while out in taken:
        out, k = f"{stem}_{k}", k + 1
    taken.add(out)
    return out


@dataclass
class ScoreInfo:
    """What the titles say about the score."""

    metric: str
    layer: int | None
    layer_note: str  # "deepest scored layer" or "chosen layer; scored 0-29"
    w_intra: float | None
    w_inter: float | None
    length_control: bool = False  # the rank follows score_length_controlled

    def title(self) -> str:
        parts = [f"metric {self.metric}"]
        if self.layer is not None:
            parts.append(f"layer {self.layer} ({self.layer_note})")
        if self.metric == "angles" and self.w_intra is not None:
            parts.append(f"w_intra {self.w_intra:g}, w_inter {self.w_inter:g}")
        if self.length_control:
            parts.append("ranked by the length-controlled score")
        return ", ".join(parts)


@styled
def score_distribution(path: Path, score: np.ndarray, controlled: np.ndarray | None, info: ScoreInfo):
    plt = pyplot()
    panels = [("score", score)] + (
        [("score_length_controlled", controlled)] if controlled is not None else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(6.8 if len(panels) == 1 else PAGE_WIDTH, 4.2))
    axes = np.atleast_1d(axes)
    for ax, (name, values) in zip(axes, panels, strict=True):
        finite = values[np.isfinite(values)]
        nan = len(values) - len(finite)
        if len(finite):
            ax.hist(finite, bins=min(80, max(10, int(np.sqrt(len(finite))))), color="#4575b4", alpha=0.85)
            p10, p50, p90 = np.quantile(finite, [0.1, 0.5, 0.9])
            ax.axvline(p50, color="black", lw=1.2, label=f"median {p50:.4g}")
            ax.axvline(p10, color=BOTTOM, lw=1, ls="--", label=f"10th pct {p10:.4g}")
            ax.axvline(p90, color=TOP, lw=1, ls="--", label=f"90th pct {p90:.4g}")
            # under the panel, where it covers no bar (tight_layout makes room for it)
            ncol = 3 if len(panels) == 1 else 2
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol, fontsize=NOTE_SIZE)
        ax.set_xlabel(name)
        ax.set_ylabel("rows")
        key = " (ranks the rows)" if name == "score_length_controlled" else ""
        shown = f"{len(finite):,} rows" + (f", {nan:,} NaN not shown" if nan else "")
        ax.set_title(f"{name}{key}:\n{shown}" if len(panels) > 1 else f"{name}: {shown}", fontsize=10.5)
    fig.suptitle(
        textwrap.fill(info.title(), int(fig.get_figwidth() * 11)), fontsize=11
    )  # never past the edge
    fig.tight_layout()
    return _save(fig, path)


@styled
def layers(path: Path, layer_ids: list[int], stats: dict, rank_layer: int | None, deciles: int):
    """``stats[component][group]``: LayerStats, groups "all", "top", "bottom"."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 4.8), sharex=True)
    x = np.asarray(layer_ids)
    marker = "o" if len(x) <= 40 else None
    for ax, component in zip(axes, ("intra", "inter"), strict=True):
        groups = stats[component]
        if not any(np.isfinite(g.mean).any() for g in groups.values()):
            ax.text(
                0.5,
                0.5,
                f"c_{component} is undefined (NaN) for every row",
                ha="center",
                transform=ax.transAxes,
                color="#555555",
            )
        for group, color, label in (
            ("top", TOP, f"top decile by rank ({deciles:,} rows)"),
            ("bottom", BOTTOM, f"bottom decile by rank ({deciles:,} rows)"),
        ):
            s = groups[group]
            ax.fill_between(x, s.mean - s.std, s.mean + s.std, color=color, alpha=0.12, lw=0)
            ax.plot(x, s.mean, color=color, marker=marker, ms=3, lw=1.6, label=label + " mean \u00b1 1 sd")
        s = groups["all"]
        ax.plot(x, s.mean, color=ALL, ls="--", lw=1.3, label=f"all rows ({s.rows:,}) mean")
        if rank_layer is not None:  # named in the legend: a label on the plot runs past its edge
            ax.axvline(rank_layer, color="black", lw=0.9, ls=":", label=f"ranking layer {rank_layer}")
        ax.set_title(
            f"c_{component}: mean cosine "
            + ("within the question" if component == "intra" else "question \u00d7 prefix")
        )
        ax.set_xlabel("model layer")
        ax.set_ylabel(f"c_{component}")
        integer_ticks(ax.xaxis)
    fig.suptitle("Angle concentration across depth: highest- vs lowest-ranked rows", fontsize=11.5)
    finish(fig, *axes[0].get_legend_handles_labels(), ncol=2)
    return _save(fig, path)


@styled
def score_vs(
    path: Path,
    x: np.ndarray,
    score: np.ndarray,
    xlabel: str,
    rho: float,
    n: int,
    n_total: int,
    log: bool = False,
):
    """Scatter of score against a numeric column, with a binned median and the rank correlation."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    notes = [binned_median(ax, x, score, xlabel.split(" (")[0])]
    notes += _scatter(ax, x, score, n_total, log)
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    ax.set_ylabel("score")
    ax.set_title(textwrap.fill(f"score vs {xlabel}: {fmt_rho(rho, n)}", 72))
    finish(fig, notes=notes)
    return _save(fig, path)


def tick_labels(categories: list[tuple[str, np.ndarray]], chars: int) -> tuple[list[str], bool]:
    """Each category's tick label and whether they must be rotated. Upright: the name wrapped
    at spaces to ``chars`` a line (at most 3 lines), then its count; when a word or the name
    does not fit, one line "name (n=...)" (cut to 40 characters), to be set at 45 degrees."""
    names = [str(name) for name, _ in categories]
    counts = [f"(n={len(v):,})" for _, v in categories]
    wrapped = [textwrap.wrap(name, max(chars, 1), break_long_words=False) or [""] for name in names]
    if all(len(lines) <= 3 and all(len(line) <= chars for line in lines) for lines in wrapped):
        return ["\n".join([*lines, n]) for lines, n in zip(wrapped, counts, strict=True)], False
    cut = [name if len(name) <= 40 else name[:39] + "\u2026" for name in names]
    return [f"{name} {n}" for name, n in zip(cut, counts, strict=True)], True


@styled
def score_by_category(path: Path, column: str, categories: list[tuple[str, np.ndarray]], other: int):
    """Box plot of score per category (already sorted and capped); ``other``: categories folded."""
    plt = pyplot()
    width = min(PAGE_WIDTH, max(6.0, 0.85 * len(categories) + 2.0))
    fig, ax = plt.subplots(figsize=(width, 4.8))
    chars = int((width - 1.3) / len(categories) * 11)  # characters of 10 pt type under one box
    labels, rotate = tick_labels(categories, chars)
    data = [v[np.isfinite(v)] for _, v in categories]
    shown = [d if len(d) else np.array([np.nan]) for d in data]
    ax.boxplot(
        shown,
        showfliers=False,
        widths=0.6,
        medianprops={"color": "black"},
        patch_artist=True,
        boxprops={"facecolor": "#c6dbef", "edgecolor": "#2166ac"},
    )
    ax.set_xticks(np.arange(1, len(labels) + 1), labels)
    means = [d.mean() if len(d) else np.nan for d in data]
    ax.plot(np.arange(1, len(means) + 1), means, "D", color=BOTTOM, ms=5)
    if rotate:  # too many boxes, or names too long, for upright labels
        ax.tick_params(axis="x", labelrotation=45)
        for tick in ax.get_xticklabels():
            tick.set_ha("right")
            tick.set_rotation_mode("anchor")
    ax.set_xlabel(column)
    ax.set_ylabel("score")
    ax.set_title(f"score by {column}")
    notes = ["boxes: quartiles and median; whiskers: 1.5 IQR (outliers hidden); diamonds: mean"]
    notes += [f"{other} rarer categories folded into (other)"] if other else []
    finish(fig, notes=notes)
    return _save(fig, path)


@styled
def validate_layers(path: Path, rows: list[dict], target: str, marks: list[tuple[int, str]]):
    """rho by layer, with its CI, per component; filled markers where the FWER-adjusted p < 0.05.
    ``marks``: (layer, role) for the layers to mark, role a key of ``MARK_COLORS``; roles on
    the same layer share one band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 5.0))
    components = [c for c in ("intra", "inter", "combined") if any(r["component"] == c for r in rows)]
    # The components sit side by side around each whole layer, so their bars do not overlap.
    shifts = (np.arange(len(components)) - (len(components) - 1) / 2) * 0.22
    offsets = dict(zip(components, shifts, strict=True))
    for comp in components:
        sel = sorted((r for r in rows if r["component"] == comp), key=lambda r: r["layer"])
        x = np.array([r["layer"] for r in sel], dtype=float) + offsets[comp]
        rho = np.array([_num(r.get("rho")) for r in sel])
        lo = np.array([_num(r.get("ci_low")) for r in sel])
        hi = np.array([_num(r.get("ci_high")) for r in sel])
        color = COMPONENT_COLORS[comp]
        yerr = np.vstack([np.clip(rho - lo, 0, None), np.clip(hi - rho, 0, None)])
        ax.errorbar(
            x,
            rho,
            yerr=np.nan_to_num(yerr),
            color=color,
            lw=1.1,
            elinewidth=0.8,
            capsize=2,
            marker="none",
            label=comp,
        )
        sig = np.array([_num(r.get("p_fwer")) < 0.05 for r in sel])
        ax.scatter(x[sig], rho[sig], color=color, s=22, zorder=3)
        ax.scatter(x[~sig], rho[~sig], facecolor="white", edgecolor=color, s=22, zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    for layer, roles in _by_layer(marks).items():  # a band behind the layer's group, not a line through it
        ax.axvspan(
            layer - 0.45,
            layer + 0.45,
            color=MARK_COLORS[roles[0]],
            alpha=0.25,
            lw=0,
            zorder=0,
            label=f"layer {layer}: {', '.join(roles)}",
        )
    layer_ids = [r["layer"] for r in rows]
    if layer_ids:
        ax.set_xlim(min(layer_ids) - 0.6, max(layer_ids) + 0.6)
    integer_ticks(ax.xaxis)
    ax.set_xlabel("model layer (" + ", ".join(components) + " side by side at each layer)")
    ax.set_ylabel(f"Spearman \u03c1 with {target}")
    ax.set_title(f"Which layer's concentration tracks {target}? \u03c1 with 95% CI")
    shown = sorted(zip(*ax.get_legend_handles_labels(), strict=True), key=lambda h: h[1].startswith("layer"))
    notes = ["filled markers: FWER-adjusted p < 0.05; hollow: not"]
    finish(fig, *zip(*shown, strict=True), ncol=3, notes=notes)  # components first, then marked layers
    return _save(fig, path)


def _by_layer(marks: list[tuple[int, str]]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for layer, role in marks:
        out.setdefault(int(layer), []).append(role)
    return out


@styled
def validate_scatter(path: Path, score: np.ndarray, target: np.ndarray, half: np.ndarray, name: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    keep = np.isfinite(score) & np.isfinite(target)
    log = wide(target[keep])
    for h in sorted(set(half[keep].tolist()), key=lambda s: (s != "choose", s)):
        sel = keep & (half == h)
        rho, _, n = spearman(score[sel], target[sel])
        ax.scatter(
            score[sel],
            target[sel],
            s=16,
            alpha=0.7,
            color=HALF_COLORS.get(h, "#777777"),
            linewidths=0,
            label=f"{h} half: \u03c1 = {rho:+.3f} (n = {n})",
        )
    if log:
        ax.set_yscale("log")
    rho, _, n = spearman(score, target)
    ax.set_xlabel("score")
    ax.set_ylabel(name + (" (log scale)" if log else ""))
    ax.set_title(f"score vs {name} on the validation sample:\n{fmt_rho(rho, n)}")
    finish(fig, *ax.get_legend_handles_labels(), ncol=2)
    return _save(fig, path)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def by_column(path: Path, col: str, values: pl.Series, score: np.ndarray, shown, categorical: bool) -> Path:
    """``by_<column>.png``: a scatter for a numeric column, a box per value for a categorical
    one (at most ``MAX_CATEGORIES`` boxes, in natural order; rarer values fold into "(other)")."""
    if not categorical:
        x = summaries.floats(values.to_physical())
        rho, _, n = spearman(x, score)
        return score_vs(path, x[shown], score[shown], col, rho, n, len(x))
    return score_by_category(path, col, *summaries.categories(values, score))
