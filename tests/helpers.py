"""Test helpers: run the CLI in-process, recompute angles naively, one prompt at a time, and
lay out a model in a Hugging Face cache as the hub client does."""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager

import numpy as np
import polars as pl
import pytest
import torch

from anglecurate.scoring.angles.unit_sums import naive_angles
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import plan, prepare_rows


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `anglecurate ARGS` in this process; returns (exit code, stdout, stderr)."""
    from anglecurate.cli.app import main

    monkeypatch.setattr(sys, "argv", ["anglecurate", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_ranked(out) -> pl.DataFrame:
    return pl.read_parquet(sorted((out / "ranked").glob("part-*.parquet")))


def naive_layer_angles(cfg: ScoreConfig, rows: int) -> dict:
    """{uid: (c_intra per layer, c_inter per layer)} from batch-1 forwards, no padding,
    with the MLP inputs kept and the O(L^2) float64 reference applied."""
    result = {}
    for uid, seg, kept, layers in batch1_mlp_inputs(cfg, rows):
        pairs = [naive_angles(kept[i], seg.n_prefix, seg.n_question) for i in layers]
        result[uid] = ([a for a, _ in pairs], [b for _, b in pairs])
    return result


def batch1_mlp_inputs(cfg: ScoreConfig, rows: int):
    """Yield (uid, Segmented, {layer: [L, d] MLP input}, scored layers) for the first
    ``rows`` rows, one unpadded forward each."""
    p = plan(cfg)
    model = p.spec.load_model(torch.float32, torch.device("cpu"))
    frame = next(iter(p.dataset.iter_chunks(rows)))[1]
    uids, _, segmented = prepare_rows(frame, np.arange(frame.height), cfg, p)
    kept = {}
    hooks = [
        mlp.register_forward_pre_hook(lambda _m, a, i=i: kept.__setitem__(i, a[0][0].clone()))
        for i, mlp in enumerate(model.mlps)
    ]
    try:
        with torch.inference_mode():
            for row, seg in segmented.items():
                model.base(input_ids=torch.tensor([seg.input_ids]), use_cache=False)
                yield uids[row], seg, dict(kept), p.layers
    finally:
        for h in hooks:
            h.remove()


def assert_matches_naive(ranked: pl.DataFrame, naive: dict, tol: float) -> None:
    assert naive, "nothing to compare"
    by_uid = {r["uid"]: r for r in ranked.iter_rows(named=True)}
    for uid, (intra, inter) in naive.items():
        row = by_uid[uid]
        assert row["c_intra_layers"] == pytest.approx(intra, abs=tol, nan_ok=True)
        assert row["c_inter_layers"] == pytest.approx(inter, abs=tol, nan_ok=True)
        assert row["c_intra"] == pytest.approx(intra[-1], abs=tol, nan_ok=True)


@contextmanager
def killed_after(writes: int):
    """Make the run raise KeyboardInterrupt (a kill between chunks) once ``writes`` chunk
    files are written; yields the list of chunk indices written."""
    from anglecurate.scoring.store import OutputDir

    original = OutputDir.write_chunk
    written: list[int] = []

    def write(self, index, frame, tag=""):
        if len(written) == writes:
            raise KeyboardInterrupt
        written.append(index)
        original(self, index, frame, tag)

    OutputDir.write_chunk = write
    try:
        yield written
    finally:
        OutputDir.write_chunk = original


# `anglecurate ARGS` run as a script that kills itself with SIGKILL on the ranking's second
# staged file write: inside the ranking lock (a re-rank, or a shard's merge), half a ranking
# staged. Run it as ``[sys.executable, "-c", KILLED_IN_RANKING, *args]``.
KILLED_IN_RANKING = """
import os, signal, sys
import anglecurate.scoring.store as store
real, calls = store.write_parquet, []
def dying(frame, path):
    calls.append(path)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(frame, path)
store.write_parquet = dying
sys.argv = ["anglecurate", *sys.argv[1:]]
from anglecurate.cli.app import main
main()
"""


def greedy_by_hand(model, prompt_ids: list[int], max_new_tokens: int, stops) -> list[int]:
    """Greedy decoding one token at a time: one prompt, no padding, no cache, the argmax
    of a full forward over the sequence so far; stops after (and keeping) a stop token."""
    seq, out = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([seq]), logits_to_keep=1).logits[0, -1].argmax())
            out.append(token)
            seq.append(token)
            if token in stops:
                break
    return out


# The commit a cached test repository is stored under.
SHA = "feedface" * 5


def hub_model(cache, model_dir, repo="org/tiny", sha=SHA, ref="main"):
    """``model_dir``'s files as the snapshot ``sha`` of ``repo`` in the cache ``cache``,
    with blobs and symlinks as the hub client stores them."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snap, blobs = repo_dir / "snapshots" / sha, repo_dir / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir(exist_ok=True)
    for n, path in enumerate(sorted(model_dir.iterdir())):
        blob = blobs / f"{n:040x}"
        shutil.copy(path, blob)
        (snap / path.name).symlink_to(f"../../blobs/{blob.name}")
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(sha)
    return snap
