"""Which rows to measure, and how to split them, so a sample covers the whole ranking.

- ``stratified_sample``: one draw per equal-width stratum of a ranked dataset, so the sample
  covers the ranking evenly instead of clustering by chance.
- ``split_halves``: choose on one half and report on the other, so a reported correlation
  is not the one that won the selection. Pairs of neighbours in the ranking are split so
  both halves span the whole ranking.

Randomness comes from ``np.random.Generator`` built from an int seed.
"""

from __future__ import annotations

import numpy as np


def split_halves(ranks: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask [n]: True = "choose" half, False = "hold-out" half, for ranks [n] int.

    Sorted by rank, consecutive pairs are split one to each half at random (an odd last
    element goes to a random half), so the halves differ in size by at most one and both
    span the whole ranking.
    """
    ranks = np.asarray(ranks)
    rng = np.random.default_rng(seed)
    order = np.argsort(ranks, kind="stable")
    n_pairs = order.size // 2
    first = rng.random(n_pairs) < 0.5
    mask = np.zeros(order.size, dtype=bool)
    mask[order[0 : 2 * n_pairs : 2]] = first
    mask[order[1 : 2 * n_pairs : 2]] = ~first
    if order.size % 2:
        mask[order[-1]] = rng.random() < 0.5
    return mask


def stratified_sample(n_rows: int, n: int, seed: int) -> np.ndarray:
    """n distinct ranks in [0, n_rows), one uniform draw per stratum; sorted int64 [n].

    Stratum i is [floor(i n_rows / n), floor((i + 1) n_rows / n)), never empty when
    n < n_rows; all of range(n_rows) when n >= n_rows.
    """
    if n_rows < 0 or n < 0:
        raise ValueError(f"n_rows and n must be >= 0, got {n_rows} and {n}")
    if n >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    # Integer arithmetic: exact boundaries with no float rounding for large n_rows.
    bounds = (np.arange(n + 1, dtype=np.int64) * n_rows) // n
    rng = np.random.default_rng(seed)
    return rng.integers(bounds[:-1], bounds[1:]).astype(np.int64)
