"""``pilot.png``: held-out accuracy against optimizer steps and against generated tokens,
the mean over seeds per arm with a band from the lowest to the highest seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.pilot.summary import mean_curve
from anglecurate.reporting.figures import pyplot, styled
from anglecurate.storage.atomic import atomic_write

COLORS = {
    "uniform": "#333333",
    "gainrl": "#1b7837",
    "gainrl-open": "#66bd63",
    "length": "#c2410c",
    "reverse": "#5e3c99",
}


@styled
def draw_pilot(frame: pl.DataFrame, path: Path, title: str) -> Path:
    """Draw the two panels from ``pilot.parquet``'s rows into ``path`` (atomically)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for arm in dict.fromkeys(frame["arm"].to_list()):
        rows = frame.filter(pl.col("arm") == arm).sort("step")
        color = COLORS.get(arm)
        for ax, unit, label in (
            (axes[0], "step", "optimizer steps"),
            (axes[1], "tokens", "generated tokens"),
        ):
            curves = [
                (g[unit].to_numpy().astype(float), g["accuracy"].to_numpy().astype(float))
                for _, g in rows.group_by("seed", maintain_order=True)
            ]
            x, y = mean_curve(curves)
            stacked = np.array([np.interp(x, cx, cy) for cx, cy in curves])
            n = len(curves)
            ax.plot(x, y, color=color, lw=1.8, label=f"{arm} (n={n})")
            if n > 1:
                ax.fill_between(x, stacked.min(0), stacked.max(0), color=color, alpha=0.15, lw=0)
            ax.set_xlabel(label)
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
