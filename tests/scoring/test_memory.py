"""Peak memory stays flat as the dataset grows: 10x the rows, at most 1.15x the peak.

The rows carry a payload column that scoring passes through to the ranked copy untouched,
so that the data are larger than the growth the bound allows: a pipeline that held the
whole dataset (or the whole ranked copy) in memory at any stage would fail it. The test
checks that premise before it measures anything.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from ..conftest import shared_file

pytestmark = pytest.mark.slow

PAYLOAD_BYTES = 128 * 1024  # per row, as hex text: ~384 MiB in memory at 3,000 rows
ALLOWED_GROWTH = 1.15
# The child's own high-water mark. Not getrusage's ru_maxrss: Linux carries it over fork and
# exec, so a child of this (large) test process would report the parent's size.
PEAK = """
import sys
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score
score(ScoreConfig(model=sys.argv[1], data=sys.argv[2], out=sys.argv[3], dtype="fp32",
                  chunk_rows=256, shard_rows=256, max_batch_tokens=4096))
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def _peak_kib(model, data, out) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(model), str(data), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def _with_payload(frame: pl.DataFrame) -> pl.DataFrame:
    """MATH rows plus a per-row incompressible text column (seeded)."""
    rng = np.random.default_rng(0)
    payload = [rng.bytes(PAYLOAD_BYTES // 2).hex() for _ in range(frame.height)]
    return frame.with_columns(pl.Series("payload", payload))


def test_peak_memory_flat_from_300_to_3000_rows(tiny_model_dir, tmp_path):
    frame = _with_payload(pl.read_parquet(shared_file("math_train.parquet")).head(3000))
    small, large, shards = tmp_path / "300.parquet", tmp_path / "3000.parquet", tmp_path / "shards"
    # Parquet is read a row group at a time (data/dataset.py), so the files keep row groups
    # near the chunk size, as datasets' own Parquet exports do.
    frame.head(300).write_parquet(small, row_group_size=256)
    frame.write_parquet(large, row_group_size=256)
    shards.mkdir()  # the same 3000 rows as ten shards, read as one dataset
    for i in range(10):
        frame.slice(300 * i, 300).write_parquet(
            shards / f"train-{i:05d}-of-00010.parquet", row_group_size=256
        )
    data_kib = frame.estimated_size() / 1024
    del frame

    peak_small = _peak_kib(tiny_model_dir, small, tmp_path / "o300")
    allowed_kib = (ALLOWED_GROWTH - 1) * peak_small
    # The premise: holding the data would break the bound (else the test could not fail).
    assert data_kib > 1.5 * allowed_kib, (data_kib, allowed_kib)
    peak_large = _peak_kib(tiny_model_dir, large, tmp_path / "o3000")
    peak_shards = _peak_kib(tiny_model_dir, shards, tmp_path / "oshards")

    ranked = pl.scan_parquet(tmp_path / "o3000" / "ranked").select("payload", "row_index").collect()
    assert ranked.height == 3000
    assert ranked["payload"].str.len_bytes().min() == PAYLOAD_BYTES  # passed through whole
    assert pl.scan_parquet(tmp_path / "oshards" / "ranked").select(pl.len()).collect().item() == 3000
    assert peak_large <= ALLOWED_GROWTH * peak_small, (peak_small, peak_large, data_kib)
    assert peak_shards <= ALLOWED_GROWTH * peak_small, (peak_small, peak_shards, data_kib)
