"""Peak memory stays flat as the dataset grows (the issue's bound: 10x rows, <= 1.15x peak)."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from ..conftest import shared_file

pytestmark = pytest.mark.slow

PEAK = """
import resource, sys
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score
score(ScoreConfig(model=sys.argv[1], data=sys.argv[2], out=sys.argv[3], dtype="fp32",
                  chunk_rows=256, shard_rows=1000, max_batch_tokens=4096))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(model, data, out) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(model), str(data), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_peak_memory_flat_from_300_to_3000_rows(tiny_model_dir, tmp_path):
    frame = pl.read_parquet(shared_file("math_train.parquet"))
    small, large, shards = tmp_path / "300.parquet", tmp_path / "3000.parquet", tmp_path / "shards"
    frame.head(300).write_parquet(small)
    frame.head(3000).write_parquet(large)
    shards.mkdir()  # the same 3000 rows as ten shards, read as one dataset
    for i in range(10):
        frame.slice(300 * i, 300).write_parquet(shards / f"train-{i:05d}-of-00010.parquet")
    peak_small = _peak_kib(tiny_model_dir, small, tmp_path / "o300")
    peak_large = _peak_kib(tiny_model_dir, large, tmp_path / "o3000")
    peak_shards = _peak_kib(tiny_model_dir, shards, tmp_path / "oshards")
    assert pl.read_parquet(tmp_path / "o3000" / "ranked").height == 3000
    assert pl.read_parquet(tmp_path / "oshards" / "ranked").height == 3000
    assert peak_large <= 1.15 * peak_small, (peak_small, peak_large)
    assert peak_shards <= 1.15 * peak_small, (peak_small, peak_shards)
