"""How the report's figures look and are laid out: matplotlib on the Agg backend (imported
on first use, so importing anglecurate never pulls it in), the rc settings every figure is
drawn under, and the pieces the drawings share: whole-number ticks, the legend and notes set
under the plots (never over a point), a binned median, a sampled scatter.

Sizes are chosen for the page: see ``PAGE_WIDTH``."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from anglecurate.base.errors import UserError

# Sizes: a figure is at most PAGE_WIDTH inches at 110 dpi (1,056 px, the page's column at
# 1280 px); at an 800 px window the page scales it to about 0.7, so type is set large enough
# (11 pt = 17 px, a 9 pt note 14 px) to stay about 10 px or more there.
PAGE_WIDTH = 9.6
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 11,
    "axes.titlesize": 11.5,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 10,
}
NOTE_SIZE = 9  # notes inside a figure (a sample shown, too few rows)


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


def styled(draw):
    """Run a drawing function under the report's rc settings, leaving the caller's untouched."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with pyplot().rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    fig.savefig(path, format="png")
    pyplot().close(fig)
    return path


def integer_ticks(axis, nbins: int | str = "auto") -> None:
    """Ticks on whole numbers only (layers, optimizer steps, tokens): never a "layer 0.2";
    thousands separated, at most ``nbins`` intervals."""
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    axis.set_major_locator(MaxNLocator(nbins=nbins, integer=True))
    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def finish(fig, handles=(), labels=(), ncol: int = 1, notes=()) -> None:
    """Lay ``fig`` out with its legend (``handles``, ``labels``) and grey ``notes`` (one a line)
    under the plots, so neither covers a point, and the axes filling the rest."""
    renderer = fig.canvas.get_renderer()
    pad = 4 / 72 / fig.get_figheight()
    bottom = pad
    if notes:
        text = fig.text(
            0.01, bottom, "\n".join(notes), ha="left", va="bottom", fontsize=NOTE_SIZE, color="#555555"
        )
        bottom += text.get_window_extent(renderer).height / fig.bbox.height + pad
    if handles:
        legend = fig.legend(handles, labels, loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, bottom))
        bottom += legend.get_window_extent(renderer).height / fig.bbox.height
    fig.tight_layout(rect=(0, bottom, 1, 1))


def alpha(n: int) -> float:
    return float(np.clip(30.0 / np.sqrt(max(n, 1)), 0.08, 0.8))


MIN_BINNED = 15  # rows with both values: fewer get a note instead of a binned median


def binned_median(ax, x: np.ndarray, y: np.ndarray, name: str) -> str:
    """The median of ``y`` within quantile bins of ``x`` (about 25 rows a bin, 3 to 20 bins),
    drawn as a step across each whole bin, so the line spans the data from its smallest ``x``
    to its largest. Returns the note that says what was drawn, or why nothing was."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < MIN_BINNED:
        return f"too few rows ({len(x)}) for a binned median (it needs {MIN_BINNED})"
    bins = int(np.clip(len(x) // 25, 3, 20))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return f"too few distinct values of {name} ({len(np.unique(x))}) for a binned median"
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    medians = [np.median(y[which == b]) if (which == b).any() else np.nan for b in range(len(edges) - 1)]
    ax.stairs(medians, edges, baseline=None, color="black", lw=1.8, zorder=3)
    return f"black steps: median score within each of {len(edges) - 1} quantile bins of {name}"


def wide(x: np.ndarray) -> bool:
    """Positive values spanning more than 30x: drawn on a log axis."""
    x = x[np.isfinite(x)]
    return bool(len(x) and x.min() > 0 and x.max() / x.min() > 30)


def scatter(ax, x, y, n_total: int, log: bool, color="#2166ac") -> list[str]:
    """Scatter of the shown rows (``len(x)`` of ``n_total``, a seeded sample when fewer);
    returns the note saying it is a sample, if it is."""
    keep = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[keep], y[keep], s=9, alpha=alpha(int(keep.sum())), color=color, linewidths=0)
    if log:
        ax.set_xscale("log")
    return [f"points: a seeded sample of {len(x):,} of {n_total:,} rows"] if len(x) < n_total else []
