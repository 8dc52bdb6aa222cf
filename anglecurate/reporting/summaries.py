"""What the report's figures summarise, reduced from the ranking's columns: the per-layer mean
and spread of c_intra and c_inter over all rows and the top and bottom deciles
(:func:`layer_stats`, accumulated one part at a time), and the score grouped by the values of a
categorical column (:func:`categories`). :mod:`anglecurate.reporting.figures` draws them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scoring.ranking import floats  # noqa: F401 (re-exported for the report)

MAX_CATEGORIES = 24  # boxes drawn in a by-column figure; rarer values fold into "(other)"
CATEGORICAL_INT_MAX = 20  # an integer column with at most this many values is a category


@dataclass
class LayerStats:
    """Per-layer mean and standard deviation of one component, for one group of rows."""

    mean: np.ndarray
    std: np.ndarray
    rows: int


def layer_stats(parts: list[Path], layer_ids: list[int], rank: np.ndarray, key: np.ndarray, key_column: str):
    """Per-layer mean and sd of c_intra and c_inter over all rows and over the top and bottom
    deciles by rank of the rows whose ranking key (``key_column``, ``key`` over all rows) is
    finite, accumulated one part at a time. Returns ``({component: {group: LayerStats}}, decile size)``."""
    ranks = np.sort(rank[np.isfinite(key) & np.isfinite(rank)])
    k = max(1, math.ceil(len(ranks) / 10))
    top_cut, bottom_cut = ranks[k - 1], ranks[len(ranks) - k]
    n_layers, groups = len(layer_ids), ("all", "top", "bottom")
    acc = {(c, g): np.zeros((3, n_layers)) for c in ("intra", "inter") for g in groups}
    rows = dict.fromkeys(groups, 0)
    for part in parts:
        cols = ("c_intra_layers", "c_inter_layers")
        frame = pl.scan_parquet(part).select("rank", key_column, *cols).collect()
        r = floats(frame["rank"])
        ok = np.isfinite(floats(frame[key_column]))
        masks = {
            "all": np.ones(frame.height, bool),
            "top": ok & (r <= top_cut),
            "bottom": ok & (r >= bottom_cut),
        }
        for g, sel in masks.items():
            rows[g] += int(sel.sum())
        for c, col in zip(("intra", "inter"), cols, strict=True):
            try:
                values = frame[col].list.to_array(n_layers).to_numpy().astype(np.float64)
            except pl.exceptions.PolarsError:
                raise UserError(
                    f"{part}: {col} does not hold one value per layer of manifest run.layers "
                    f"({n_layers}); rerun `anglecurate score`"
                ) from None
            for g, sel in masks.items():
                v = values[sel]
                good = np.isfinite(v)
                acc[c, g] += [good.sum(0), np.where(good, v, 0).sum(0), np.where(good, v * v, 0).sum(0)]
    stats: dict = {c: {} for c in ("intra", "inter")}
    for (c, g), (n, s, ss) in acc.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, s / n, np.nan)
            std = np.sqrt(np.maximum(np.where(n > 0, ss / n, np.nan) - mean * mean, 0))
        stats[c][g] = LayerStats(mean, std, rows[g])
    return stats, k


def is_categorical(dtype: pl.DataType, distinct: int) -> bool:
    """Strings, booleans, categoricals and integers with few distinct values are categories."""
    if dtype.is_numeric() or dtype.is_temporal():
        return dtype.is_integer() and distinct <= CATEGORICAL_INT_MAX
    return True


def categories(values: pl.Series, score: np.ndarray) -> tuple[list[tuple[str, np.ndarray]], int]:
    """The scores per value of a categorical column: the ``MAX_CATEGORIES`` most frequent values
    in natural order, rarer values folded into "(other)". Returns the (label, scores) pairs and
    how many values were folded."""
    frame = pl.DataFrame({"v": values, "s": score}).group_by("v").agg("s", pl.len().alias("n"))
    frame = frame.sort("n", "v", descending=[True, False], nulls_last=True)
    kept, rest = frame.head(MAX_CATEGORIES), frame.slice(MAX_CATEGORIES)
    cats = sorted(kept.select("v", "s").iter_rows(), key=lambda t: _natural(t[0]))
    cats = [("(null)" if v is None else str(v), np.asarray(s, dtype=np.float64)) for v, s in cats]
    if rest.height:
        cats.append(("(other)", np.concatenate([np.asarray(s, dtype=np.float64) for s in rest["s"]])))
    return cats, rest.height


def _natural(v) -> tuple:
    """Sort key: numbers by value, text with embedded numbers naturally ("Level 10" after
    "Level 9"), None last."""
    if v is None:
        return (2,)
    if isinstance(v, bool | int | float):
        return (0, float(v))
    return (
        1,
        tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", str(v))),
    )
