"""`anglecurate score` end to end on a tiny random Llama: outputs, exactness, resume."""

from __future__ import annotations

import json

import polars as pl
import pytest

from anglecurate.base.errors import UserError
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score
from anglecurate.scoring.store import SCORE_COLUMNS, OutputDir

from ..conftest import shared_file
from ..helpers import assert_matches_naive, killed_after, naive_layer_angles, read_ranked


@pytest.fixture(scope="module")
def verl_parquet(tmp_path_factory):
    frame = pl.read_parquet(shared_file("math_train.parquet")).head(30)
    path = tmp_path_factory.mktemp("data") / "verl.parquet"
    frame.write_parquet(path)
    return path


def _cfg(model, data, out, **kw) -> ScoreConfig:
    return ScoreConfig(model=str(model), data=str(data), out=str(out), dtype="fp32", **kw)


def test_json_rows_ranked_and_exact(tiny_model_dir, math_json, tmp_path):
    cfg = _cfg(
        tiny_model_dir, math_json, tmp_path / "out", field="problem", chunk_rows=16, max_batch_tokens=4096
    )
    result = score(cfg)
    ranked = read_ranked(tmp_path / "out")
    original = pl.read_json(math_json)
    assert ranked.height == 40 and result.manifest["counts"]["scored"] == 40
    assert ranked.columns == [*SCORE_COLUMNS, *original.columns]
    assert ranked["rank"].to_list() == list(range(40))
    scores = ranked["score"].to_list()
    assert scores == sorted(scores, reverse=True)
    assert sorted(ranked["uid"].to_list()) == list(range(40))
    assert ranked["row_index"].to_list() == ranked["uid"].to_list()  # no --id-field: uid is the row
    # every original column unchanged, row by row
    back = ranked.sort("uid").select(original.columns)
    assert back.equals(original)
    # score is the weighted sum at the ranking layer, which is the last layer
    assert (ranked["score"] - ranked["c_intra"] - ranked["c_inter"]).abs().max() < 1e-12
    assert ranked["c_intra_layers"].list.len().unique().to_list() == [3]
    assert (ranked["n_prefix"] + ranked["n_question"] < ranked["n_tokens"]).all()
    # equal to a batch-1, unpadded, O(L^2) float64 recomputation of every layer
    assert_matches_naive(ranked, naive_layer_angles(cfg, 40), tol=1e-4)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["run"]["dataset"]["rows"] == 40
    assert manifest["run"]["layers"] == [0, 1, 2] and manifest["ranking"]["layer"] == 2
    assert manifest["timing"]["tokens_this_run"] == ranked["n_tokens"].sum()
    assert not (tmp_path / "out" / ".anglecurate").exists()


def test_verl_messages_keep_every_column(tiny_model_dir, verl_parquet, tmp_path):
    out = tmp_path / "out"
    score(_cfg(tiny_model_dir, verl_parquet, out, layers="0,-1", rank_layer=0, w_inter=8.0, shard_rows=7))
    parts = sorted((out / "ranked").glob("part-*.parquet"))
    assert [pl.read_parquet(p).height for p in parts] == [7, 7, 7, 7, 2]
    ranked = read_ranked(out)
    original = pl.read_parquet(verl_parquet)
    assert ranked.select(original.columns).schema == original.schema
    assert ranked.sort("uid").select(original.columns).equals(original)
    first = ranked["c_intra_layers"].list.first()
    assert (ranked["c_intra"] - first).abs().max() < 1e-12
    assert (ranked["score"] - ranked["c_intra"] - 8 * ranked["c_inter"]).abs().max() < 1e-12


def test_resume_after_interruption_equals_clean_run(tiny_model_dir, math_json, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    score(_cfg(tiny_model_dir, math_json, clean, field="problem", chunk_rows=8))
    broken = tmp_path / "broken"
    with killed_after(2), pytest.raises(KeyboardInterrupt):
        score(_cfg(tiny_model_dir, math_json, broken, field="problem", chunk_rows=8))
    assert not (broken / "manifest.json").exists()
    assert OutputDir(broken).done_chunks() == {0, 1}
    # a half-written file from the kill must not be mistaken for a chunk
    (broken / ".anglecurate" / "chunks" / ".chunk-00002.parquet.tmp-1").write_bytes(b"partial")
    result = score(_cfg(tiny_model_dir, math_json, broken, field="problem", chunk_rows=8))
    assert result.chunks_resumed == 2
    assert result.manifest["timing"]["rows_this_run"] == 24
    assert read_ranked(broken).equals(read_ranked(clean))
    again = score(_cfg(tiny_model_dir, math_json, broken, field="problem", chunk_rows=8))
    assert again.status == "already complete"


def test_rerun_with_other_options_is_refused_unless_overwrite(tiny_model_dir, math_json, tmp_path):
    from anglecurate.base.errors import UserError

    out = tmp_path / "out"
    score(_cfg(tiny_model_dir, math_json, out, field="problem"))
    before = (out / "manifest.json").read_text()
    with pytest.raises(UserError, match="different layers"):
        score(_cfg(tiny_model_dir, math_json, out, field="problem", layers="last"))
    assert (out / "manifest.json").read_text() == before
    result = score(_cfg(tiny_model_dir, math_json, out, field="problem", layers="last", overwrite=True))
    assert result.manifest["run"]["layers"] == [2]
    assert read_ranked(out)["c_intra_layers"].list.len().unique().to_list() == [1]


def test_long_prompts_skipped_or_truncated_and_counted(tiny_model_dir, math_json, tmp_path):
    lengths = score(_cfg(tiny_model_dir, math_json, tmp_path / "a", field="problem"))
    ranked = read_ranked(tmp_path / "a")
    limit = int(ranked["n_tokens"].median())
    too_long = int((ranked["n_tokens"] > limit).sum())
    assert lengths.manifest["counts"]["skipped"] == {}
    skip = score(_cfg(tiny_model_dir, math_json, tmp_path / "b", field="problem", max_length=limit))
    assert skip.manifest["counts"]["skipped"] == {"too_long": too_long}
    skipped = pl.read_parquet(tmp_path / "b" / "skipped.parquet")
    assert skipped.height == too_long and set(skipped["skip_reason"]) == {"too_long"}
    assert "problem" in skipped.columns
    cut = score(
        _cfg(tiny_model_dir, math_json, tmp_path / "c", field="problem", max_length=limit, on_long="truncate")
    )
    assert cut.manifest["counts"]["truncated"] == too_long
    truncated = read_ranked(tmp_path / "c").filter(pl.col("truncated"))
    assert truncated.height == too_long and (truncated["n_tokens"] == limit).all()


def test_undefined_scores_rank_last(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [
        {"q": "What is the sum of the first ten odd numbers?"},
        {"q": "7"},
        {"q": "Prove that there are infinitely many primes."},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = score(_cfg(tiny_model_dir, data, tmp_path / "out", field="q"))
    ranked = read_ranked(tmp_path / "out")
    n_q = dict(zip(ranked["uid"], ranked["n_question"], strict=True))
    assert n_q[1] == 1  # "7" is one token: no intra pairs, so c_intra and score are NaN
    assert result.manifest["counts"]["undefined_score"] == 1
    assert ranked["uid"][-1] == 1 and ranked["score"].is_nan()[-1]
    assert not ranked["c_inter"].is_nan()[-1]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_packed_batches_equal_padded_and_one_at_a_time(
    tiny_model_dir, math_json, tmp_path, monkeypatch, backend
):
    """Packed (positions restart per prompt, no padding), padded and batch-1 runs agree; on
    CPU the packed path runs SDPA with the block-diagonal mask transformers derives."""
    if backend == "triton":
        pytest.importorskip("triton")  # runs in Triton's interpreter without a GPU
    monkeypatch.setenv("ANGLECURATE_KERNEL", backend)
    padded = _cfg(tiny_model_dir, math_json, tmp_path / "padded", field="problem", max_batch_tokens=4096)
    packed = _cfg(
        tiny_model_dir, math_json, tmp_path / "packed", field="problem", max_batch_tokens=4096, packing="on"
    )
    score(padded)
    score(packed)
    a, b = read_ranked(tmp_path / "padded"), read_ranked(tmp_path / "packed")
    assert a["uid"].to_list() == b["uid"].to_list() and a["n_tokens"].equals(b["n_tokens"])
    for column in ("c_intra_layers", "c_inter_layers"):
        diff = (a[column].explode() - b[column].explode()).abs().max()
        assert diff < 1e-5, (column, diff)  # documented tolerance: 1e-5 in fp32
    assert_matches_naive(b, naive_layer_angles(packed, 40), tol=1e-4)


def test_packing_auto_follows_the_attention_kernel():
    def cfg(**kw):
        return ScoreConfig(model="m", data="d", out="o", **kw)

    assert not cfg().packed  # SDPA: a packed row would attend over the whole row
    assert cfg(attn_implementation="flex_attention").packed
    assert cfg(packing="on").packed and not cfg(attn_implementation="flash_attention_2", packing="off").packed
    with pytest.raises(UserError, match="--attn-implementation 'fa9'"):
        cfg(attn_implementation="fa9").validate()
    with pytest.raises(UserError, match="--packing"):
        cfg(packing="yes").validate()


def test_a_uid_column_is_the_id_when_named_and_refused_otherwise(tiny_model_dir, tmp_path):
    data = tmp_path / "u.jsonl"
    data.write_text(
        "".join(json.dumps({"uid": f"r{i}", "prompt": f"What is {i} + 1?"}) + "\n" for i in range(4))
    )
    with pytest.raises(UserError, match="pass --id-field uid"):
        score(_cfg(tiny_model_dir, data, tmp_path / "refused"))
    score(_cfg(tiny_model_dir, data, tmp_path / "out", id_field="uid"))
    ranked = read_ranked(tmp_path / "out")
    assert ranked.columns.count("uid") == 1
    assert sorted(ranked["uid"].to_list()) == ["r0", "r1", "r2", "r3"]
