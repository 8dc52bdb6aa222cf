"""`score --embed LAYER`: each row's mean question-token hidden state at that layer, from the
same forward pass, checked against a naive batch-1 recomputation; resumed with the chunks,
merged across shards, unchanged by re-ranks; a run without it writes what it always did."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from anglecurate.base.errors import UserError
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.embeddings import read_embeddings
from anglecurate.scoring.pipeline import plan, prepare_rows, score
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.rerank import rerank

from ..helpers import killed_after, read_ranked, run_cli

# Mean of the stored float32 vector against a float64 batch-1 recomputation in the same
# dtype: fp32 differs by summation order only; bf16 by the batch's other kernels too.
TOLERANCE = {"fp32": 2e-6, "bf16": 2e-3}  # measured: 8e-7 and 4e-4 at most


def _cfg(model, data, out, **kw) -> ScoreConfig:
    options = {"dtype": "fp32", "field": "problem", "max_batch_tokens": 600, "chunk_rows": 16, "embed": 1}
    return ScoreConfig(model=str(model), data=str(data), out=str(out), **{**options, **kw})


def naive_means(cfg: ScoreConfig, layer: int) -> dict[int, np.ndarray]:
    """{row_index: mean of the question tokens' MLP input at ``layer``} from one unpadded
    forward per prompt in the run's dtype, the MLP input kept by a hook, averaged in float64."""
    p = plan(cfg)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.dtype]
    model = p.spec.load_model(dtype, torch.device("cpu"))
    frame = next(iter(p.dataset.iter_chunks(p.dataset.num_rows)))[1]
    _, _, segmented = prepare_rows(frame, np.arange(frame.height), cfg, p)
    kept = {}
    hook = model.mlps[layer].register_forward_pre_hook(lambda _m, a: kept.__setitem__("x", a[0][0]))
    means = {}
    try:
        with torch.inference_mode():
            for row, seg in segmented.items():
                model.base(input_ids=torch.tensor([seg.input_ids]), use_cache=False)
                question = kept["x"][seg.n_prefix : seg.n_prefix + seg.n_question]
                means[row] = question.to(torch.float64).mean(0).numpy()
    finally:
        hook.remove()
    return means


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _assert_matches(out, naive: dict, tol: float) -> None:
    rows, vectors = read_embeddings(out, np.array(sorted(naive)))
    assert vectors.dtype == np.float32 and vectors.shape == (len(naive), 64)
    want = np.stack([naive[r] for r in rows])
    err = np.abs(vectors - want).max()
    assert err < tol
    assert np.abs(want).max() > 30 * tol  # the check is not vacuous


@pytest.fixture(scope="module")
def embedded(tiny_model_dir, math_json, tmp_path_factory):
    """A padded fp32 run with --embed 1, killed after its first chunk and resumed."""
    out = tmp_path_factory.mktemp("embed") / "out"
    cfg = _cfg(tiny_model_dir, math_json, out)
    with killed_after(1) as written, pytest.raises(KeyboardInterrupt):
        score(cfg)
    assert written == [0]
    assert score(cfg).chunks_resumed == 1
    return out


def test_embeddings_match_a_naive_recomputation_after_a_resume(embedded, tiny_model_dir, math_json):
    naive = naive_means(_cfg(tiny_model_dir, math_json, embedded), 1)
    _assert_matches(embedded, naive, TOLERANCE["fp32"])
    manifest = _manifest(embedded)
    assert manifest["run"]["embed"] == {"layer": 1}
    assert manifest["outputs"]["embeddings"] == {
        "file": "embeddings.safetensors",
        "layer": 1,
        "rows": 40,
        "hidden": 64,
        "dtype": "float32",
    }
    # the chunk column stays out of the ranked rows
    assert "_embedding" not in read_ranked(embedded).columns


@pytest.mark.parametrize(("dtype", "packing"), [("fp32", "on"), ("bf16", "off")])
def test_packed_and_bf16_batches_match_too(tiny_model_dir, math_json, tmp_path, dtype, packing):
    cfg = _cfg(tiny_model_dir, math_json, tmp_path / "out", dtype=dtype, packing=packing, embed=-1)
    score(cfg)
    _assert_matches(tmp_path / "out", naive_means(cfg, 2), TOLERANCE[dtype])


def test_embeddings_follow_the_rows_through_a_rerank(embedded, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(embedded, copy)
    file_before = (copy / "embeddings.safetensors").read_bytes()
    rows, vectors = read_embeddings(copy)  # the ranking's order
    assert rows.tolist() == read_ranked(copy)["row_index"].to_list()
    rerank(copy, RankChoice(by="length"))
    rows_after, vectors_after = read_embeddings(copy)
    assert rows_after.tolist() == read_ranked(copy)["row_index"].to_list() != rows.tolist()
    by_row = dict(zip(rows.tolist(), vectors, strict=True))
    assert all(np.array_equal(by_row[r], v) for r, v in zip(rows_after.tolist(), vectors_after, strict=True))
    assert (copy / "embeddings.safetensors").read_bytes() == file_before  # never rewritten


def test_sharded_runs_merge_the_same_embeddings(embedded, tiny_model_dir, math_json, tmp_path):
    from anglecurate.data.shard import parse_shard

    out = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        score(_cfg(tiny_model_dir, math_json, out, shard=parse_shard(shard)))
    rows, vectors = read_embeddings(out, np.arange(40))
    single_rows, single = read_embeddings(embedded, np.arange(40))
    assert rows.tolist() == single_rows.tolist()
    assert np.abs(vectors - single).max() < TOLERANCE["fp32"]  # other batches, same values


def test_without_embed_nothing_changes(embedded, tiny_model_dir, math_json, tmp_path):
    out = tmp_path / "plain"
    score(_cfg(tiny_model_dir, math_json, out, embed=None))
    assert not (out / "embeddings.safetensors").exists()
    manifest = _manifest(out)
    assert "embed" not in manifest["run"] and "embeddings" not in manifest["outputs"]
    assert read_ranked(out).equals(read_ranked(embedded))  # the ranking is the same either way
    with pytest.raises(UserError, match="holds no embeddings; score it with"):
        read_embeddings(out)


def test_embed_mistakes_are_one_line(tiny_model_dir, math_json, embedded, tmp_path, monkeypatch, capsys):
    args = ["score", "--model", tiny_model_dir, "--data", math_json, "--field", "problem", "--dtype", "fp32"]
    code, _, err = run_cli(
        monkeypatch, capsys, *args, "--out", tmp_path / "a", "--layers", "2", "--embed", "1"
    )
    assert code == 2 and err.strip().startswith("error: --embed 1: layer 1 is not scored (--layers 2)")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "b", "--embed", "7")
    assert code == 2 and "--embed: layer 7 does not exist; the model has 3 layers" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # a finished run scored with another --embed is refused, not silently mixed
    copy = tmp_path / "c"
    shutil.copytree(embedded, copy)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        *args,
        "--out",
        copy,
        "--embed",
        "2",
        "--max-batch-tokens",
        "600",
        "--chunk-rows",
        "16",
    )
    assert code == 2 and "holds a run with different embed" in err
    with pytest.raises(UserError, match="row 99 has no embedding"):
        read_embeddings(copy, np.array([0, 99]))
    assert pl.read_parquet(copy / "ranked" / "part-00000.parquet").height == 40


def test_prefill_features_carry_the_embedding_in_rank_order(embedded):
    from anglecurate.scoring.features import read_prefill_features

    plain = read_prefill_features(embedded)
    full = read_prefill_features(embedded, embeddings=True)
    assert full.features.shape == (40, plain.features.shape[1] + 64)
    assert (
        full.names[-1] == "embed[63]"
        and full.row_index.tolist() == read_ranked(embedded)["row_index"].to_list()
    )
    rows, vectors = read_embeddings(embedded)
    assert np.array_equal(full.features[:, -64:], vectors.astype(np.float64))
    assert np.array_equal(full.features[:, : plain.features.shape[1]], plain.features, equal_nan=True)
