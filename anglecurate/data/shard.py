"""Shards of a scoring run: which rows a process scores when several share one ``OUT``.

A row belongs to shard ``blake2b(str(uid)) mod N``: stable across processes, machines and
library versions (unlike Python's ``hash`` or a dataframe library's hash), and independent
of the row's position, so a shard's rows do not move when the file is re-read. Shards
share ``OUT``: each writes its own chunk files and a completion marker, and the global
ranking is built from all of them exactly as a single run builds it from its chunks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anglecurate.base.errors import UserError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``Shard(0, 1)`` is the whole dataset."""

    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        return self.count == 1

    @property
    def tag(self) -> str:
        """File-name tag: ``s1of4``; empty for an unsharded run."""
        return "" if self.whole else f"s{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def mask(self, uids: Sequence) -> np.ndarray:
        """bool [len(uids)]: which of these uids fall in this shard."""
        if self.whole:
            return np.ones(len(uids), dtype=bool)
        buckets = [
            int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8).digest(), "little") for u in uids
        ]
        return np.asarray(buckets, dtype=np.uint64) % np.uint64(self.count) == self.index


def parse_shard(spec: str | None) -> Shard:
    """``i/N`` (0 <= i < N) from ``--shard``; None means the whole dataset."""
    if spec is None:
        return Shard()
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard {spec!r}: write it as i/N, e.g. 0/4 for the first of four") from None
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard {spec}: need 0 <= i < N, e.g. 0/{max(count, 1)}")
    return Shard(index, count)


def launcher_shard(environ=os.environ) -> tuple[Shard, int | None]:
    """The shard and local device index a launcher (torchrun) assigned, from RANK/WORLD_SIZE
    and LOCAL_RANK; (whole, None) outside such a launcher."""
    world = environ.get("WORLD_SIZE")
    rank = environ.get("RANK")
    if world is None or rank is None or int(world) <= 1:
        return Shard(), None
    local = environ.get("LOCAL_RANK")
    return Shard(int(rank), int(world)), int(local) if local is not None else None
