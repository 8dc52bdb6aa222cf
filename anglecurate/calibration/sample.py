"""Which ranked rows get rollouts, and where a row sits in an order. Pure and seeded.

The sample is stratified over the ranking's order: the order is cut into ``n`` strata of
equal width and one row is drawn from each (:func:`anglecurate.stats.sampling.stratified_sample`),
so the top, the middle and the bottom of the ranking are all measured, whatever the order
puts where. A caller may name its own rows instead (every training row of a pilot, say).

Positions serve the report's figure: where each measured row falls in the angle order and
in the calibrated order (by its held-out prediction), so measured pass rates can be drawn
against rank for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anglecurate.stats.sampling import stratified_sample


@dataclass(frozen=True)
class Sample:
    """The rows to roll out.

    positions: [m] int64, sorted rank positions (0 = first in the order drawn over);
    asked: the size asked for (None when the caller named its rows); of: ranked rows.
    """

    positions: np.ndarray
    asked: int | None
    of: int
    seed: int

    @property
    def size(self) -> int:
        return int(self.positions.size)

    @property
    def everything(self) -> bool:
        """Every ranked row is in the sample."""
        return self.size == self.of

    def note(self) -> str | None:
        """The line to show when more rows were asked for than the ranking holds."""
        if self.asked is not None and self.asked > self.of:
            return f"--sample {self.asked} is more than the {self.of} ranked rows; rolling out all {self.of}"
        return None

    def to_dict(self) -> dict:
        return {"asked": self.asked, "n": self.size, "of": self.of, "seed": self.seed}


def draw_sample(n_rows: int, n: int, seed: int) -> Sample:
    """One row per stratum of ``n`` equal strata of ``range(n_rows)``; every row when
    ``n >= n_rows``."""
    return Sample(stratified_sample(n_rows, n, seed), n, n_rows, seed)


def named_rows(ranked: np.ndarray, rows: Sequence[int], seed: int) -> tuple[Sample, list[int]]:
    """The sample of a caller's own rows: ``ranked`` [N] int64 is the row_index at each rank
    position, ``rows`` the input rows asked for. Returns the sample and the asked rows that
    are not ranked (skipped or dropped when scored), in the order given."""
    where = {int(r): p for p, r in enumerate(np.asarray(ranked).tolist())}
    asked = list(dict.fromkeys(int(r) for r in rows))
    missing = [r for r in asked if r not in where]
    positions = np.sort(np.array([where[r] for r in asked if r in where], dtype=np.int64))
    return Sample(positions, None, len(where), seed), missing


def order_position(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Where each of ``query`` [m] would stand in the order of ``keys`` [N], highest first:
    the number of keys strictly above it (so tied rows share their first position). NaN keys
    stand last, and a NaN query after every finite key. Returns [m] int64 in [0, N]."""
    keys = np.asarray(keys, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    finite = np.sort(keys[np.isfinite(keys)])
    above = finite.size - np.searchsorted(finite, query, side="right")
    return np.where(np.isfinite(query), above, finite.size).astype(np.int64)


def binned_by_position(
    position: np.ndarray, values: Sequence[np.ndarray], bins: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """``values`` (each [m]) averaged within ``bins`` groups of about equal size of the
    rows sorted by ``position`` [m]: (mean position [b], mean of each value [b], rows [b]).
    Fewer bins than asked when there are fewer rows."""
    order = np.argsort(np.asarray(position), kind="stable")
    groups = [g for g in np.array_split(order, max(1, min(bins, order.size))) if g.size]
    centres = np.array([np.mean(position[g]) for g in groups], dtype=np.float64)
    means = [np.array([np.mean(np.asarray(v, dtype=np.float64)[g]) for g in groups]) for v in values]
    return centres, means, np.array([g.size for g in groups], dtype=np.int64)
