"""The report's figures: each drawing function makes one PNG from arrays that
:mod:`anglecurate.reporting.write` read (and :mod:`anglecurate.reporting.summaries` reduced) and returns its
path. matplotlib is imported inside :func:`pyplot` (Agg backend), so importing anglecurate
never pulls it in."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.reporting import summaries
from anglecurate.stats.correlation import spearman

TOP, BOTTOM, ALL = "#1b7837", "#c2410c", "#333333"  # top decile, bottom decile, all rows
COMPONENT_COLORS = {"intra": "#2166ac", "inter": "#b2182b", "combined": "#5e3c99"}
HALF_COLORS = {"choose": "#2166ac", "hold_out": "#d95f02"}
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}


def pyplot():
    """matplotlib's pyplot, on the Agg backend (no display needed) unless the caller's process
    already imported pyplot with a backend of its own (a notebook keeps its inline plots)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("anglecurate report needs matplotlib: pip install matplotlib") from None
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def styled(draw):
    """Run a drawing function under the report's rc settings, leaving the caller's untouched."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with pyplot().rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    pyplot().close(fig)
    return path


def _alpha(n: int) -> float:
    return float(np.clip(30.0 / np.sqrt(max(n, 1)), 0.08, 0.8))


def _binned_median(ax, x: np.ndarray, y: np.ndarray, log: bool) -> None:
    """A running median of y over quantile bins of x, so a trend shows through the cloud."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 40 or np.ptp(x) == 0:
        return
    edges = np.unique(np.quantile(x, np.linspace(0, 1, min(21, len(x) // 20 + 1))))
    if len(edges) < 3:
        return
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    centers, medians = [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() >= 5:
            lo, hi = edges[b], edges[b + 1]
            centers.append(np.sqrt(lo * hi) if log and lo > 0 else (lo + hi) / 2)
            medians.append(np.median(y[sel]))
    if len(centers) >= 2:
        ax.plot(centers, medians, color="black", lw=1.6, label="binned median")
        ax.legend(loc="best")


def wide(x: np.ndarray) -> bool:
    """Positive values spanning more than 30x: drawn on a log axis."""
    x = x[np.isfinite(x)]
    return bool(len(x) and x.min() > 0 and x.max() / x.min() > 30)


def _scatter(ax, x, y, n_total: int, log: bool, color="#2166ac") -> None:
    """Scatter of the shown rows (``len(x)`` of ``n_total``, a seeded sample when fewer)."""
    keep = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[keep], y[keep], s=7, alpha=_alpha(int(keep.sum())), color=color, linewidths=0)
    if log:
        ax.set_xscale("log")
    if len(x) < n_total:
        note = f"showing a seeded sample of {len(x):,} of {n_total:,} rows"
        ax.text(
            0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=7.5, color="#555555"
        )


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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 0.8, 3.9), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        finite = values[np.isfinite(values)]
        nan = len(values) - len(finite)
        if len(finite):
            ax.hist(finite, bins=min(80, max(10, int(np.sqrt(len(finite))))), color="#4575b4", alpha=0.85)
            p10, p50, p90 = np.quantile(finite, [0.1, 0.5, 0.9])
            ax.axvline(p50, color="black", lw=1.2, label=f"median {p50:.4g}")
            ax.axvline(p10, color=BOTTOM, lw=1, ls="--", label=f"10th pct {p10:.4g}")
            ax.axvline(p90, color=TOP, lw=1, ls="--", label=f"90th pct {p90:.4g}")
            ax.legend(loc="best", fontsize=7.5)
        ax.set_xlabel(name)
        ax.set_ylabel("rows")
        key = " (ranks the rows)" if name == "score_length_controlled" else ""
        shown = f"{len(finite):,} rows" + (f", {nan:,} NaN not shown" if nan else "")
        ax.set_title(f"{name}{key}: {shown}", fontsize=9.5)
    fig.suptitle(info.title(), fontsize=10.5)
    fig.tight_layout()
    return _save(fig, path)


@styled
def layers(path: Path, layer_ids: list[int], stats: dict, rank_layer: int | None, deciles: int):
    """``stats[component][group]``: LayerStats, groups "all", "top", "bottom"."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), sharex=True)
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
        if rank_layer is not None:
            ax.axvline(rank_layer, color="black", lw=0.9, ls=":")
            ax.annotate(
                f"ranking layer {rank_layer}",
                xy=(rank_layer, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                ha="left",
                va="top",
                fontsize=8,
            )
        ax.set_title(
            f"c_{component}: mean cosine "
            + ("within the question" if component == "intra" else "question \u00d7 prefix")
        )
        ax.set_xlabel("model layer")
        ax.set_ylabel(f"c_{component}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Angle concentration across depth: highest- vs lowest-ranked rows", fontsize=10.5)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    _scatter(ax, x, score, n_total, log)
    _binned_median(ax, x, score, log)
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    ax.set_ylabel("score")
    ax.set_title(f"score vs {xlabel}: {fmt_rho(rho, n)}")
    fig.tight_layout()
    return _save(fig, path)


@styled
def score_by_category(path: Path, column: str, categories: list[tuple[str, np.ndarray]], other: int):
    """Box plot of score per category (already sorted and capped); ``other``: categories folded."""
    plt = pyplot()
    width = min(14.0, max(6.0, 0.55 * len(categories) + 2.5))
    fig, ax = plt.subplots(figsize=(width, 4.6))
    labels = [f"{name}\n(n={len(v):,})" for name, v in categories]
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
    ax.plot(np.arange(1, len(means) + 1), means, "D", color=BOTTOM, ms=4, label="mean")
    ax.legend(loc="best")
    slot_chars = (width - 1.5) / len(labels) * 11  # characters that fit under one box, roughly
    if max(len(name) for name, _ in categories) > slot_chars:
        ax.tick_params(axis="x", labelrotation=45, labelsize=7.5)
        for tick in ax.get_xticklabels():
            tick.set_ha("right")
    ax.set_xlabel(column)
    ax.set_ylabel("score")
    note = f"; {other} rarer categories folded into (other)" if other else ""
    ax.set_title(
        f"score by {column} (boxes: quartiles, whiskers 1.5 IQR, outliers hidden){note}", fontsize=9.5
    )
    fig.tight_layout()
    return _save(fig, path)


@styled
def validate_layers(path: Path, rows: list[dict], target: str, marks: list[tuple[int, str, str]]):
    """rho by layer, with its CI, per component; filled markers where the FWER-adjusted p < 0.05.
    ``marks``: (layer, label, color) vertical lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10.5, 4.6))
    components = [c for c in ("intra", "inter", "combined") if any(r["component"] == c for r in rows)]
    offsets = dict(
        zip(
            components, np.linspace(-0.2, 0.2, len(components)) if len(components) > 1 else [0.0], strict=True
        )
    )
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
    for (layer, label, color), style in zip(marks, ("--", "-.", ":"), strict=False):
        ax.axvline(layer, color=color, lw=1.3, ls=style, label=label)
    ax.set_xlabel("model layer")
    ax.set_ylabel(f"Spearman \u03c1 with {target}")
    ax.set_title(
        f"Which layer's concentration tracks {target}? \u03c1 with 95% CI (filled: FWER-adjusted p < 0.05)"
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, path)


@styled
def validate_scatter(path: Path, score: np.ndarray, target: np.ndarray, half: np.ndarray, name: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    keep = np.isfinite(score) & np.isfinite(target)
    log = wide(target[keep])
    for h in sorted(set(half[keep].tolist()), key=lambda s: (s != "choose", s)):
        sel = keep & (half == h)
        rho, _, n = spearman(score[sel], target[sel])
        ax.scatter(
            score[sel],
            target[sel],
            s=14,
            alpha=0.7,
            color=HALF_COLORS.get(h, "#777777"),
            linewidths=0,
            label=f"{h}: \u03c1 = {rho:+.3f} (n = {n})",
        )
    if log:
        ax.set_yscale("log")
    rho, _, n = spearman(score, target)
    ax.set_xlabel("score")
    ax.set_ylabel(name + (" (log scale)" if log else ""))
    ax.set_title(f"score vs {name} on the validation sample: {fmt_rho(rho, n)}")
    ax.legend(title="half", loc="best")
    fig.tight_layout()
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
