"""A run killed for real (SIGKILL, mid-chunk or mid-ranking) resumes to the same result."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score
from anglecurate.scoring.store import OutputDir

from ..conftest import shared_file
from ..helpers import read_ranked

pytestmark = pytest.mark.slow


def _cmd(model, data, out):
    return [
        sys.executable,
        "-m",
        "anglecurate",
        "score",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--dtype",
        "fp32",
        "--chunk-rows",
        "64",
        "--quiet",
    ]


def test_sigkill_mid_run_then_same_command_resumes(tiny_model_dir, tmp_path):
    data = tmp_path / "math.parquet"
    pl.read_parquet(shared_file("math_train.parquet")).head(1000).write_parquet(data)
    clean = tmp_path / "clean"
    subprocess.run(_cmd(tiny_model_dir, data, clean), check=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_model_dir, data, out))
    chunks = out / ".anglecurate" / "chunks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(chunks.glob("chunk-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = OutputDir(out).done_chunks()
    assert 3 <= len(done) < 16, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()

    subprocess.run(_cmd(tiny_model_dir, data, out), check=True)
    assert read_ranked(out).equals(read_ranked(clean))


def test_crash_during_ranking_then_rerun_finishes(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(f'{{"prompt": "What is {i} times {i + 3}?"}}' for i in range(50)))
    cfg = ScoreConfig(
        model=str(tiny_model_dir),
        data=str(data),
        out=str(tmp_path / "o"),
        dtype="fp32",
        chunk_rows=16,
        shard_rows=20,
    )

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    # Killed while the ranking is staged, before its COMMIT marker: the chunks are kept,
    # no manifest, no ranked/; the rerun ranks again.
    monkeypatch.setattr(OutputDir, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        score(cfg)
    monkeypatch.undo()
    assert not (tmp_path / "o" / "ranked").exists() and not (tmp_path / "o" / "manifest.json").exists()
    result = score(cfg)
    assert result.status == "complete" and result.chunks_resumed == 4
    first = read_ranked(tmp_path / "o")

    # Killed after the COMMIT marker, mid-swap: the next reader completes the swap.
    cfg.overwrite = True
    monkeypatch.setattr(OutputDir, "_apply", crash)
    with pytest.raises(KeyboardInterrupt):
        score(cfg)
    monkeypatch.undo()
    assert (tmp_path / "o" / ".anglecurate" / "finalize" / "COMMIT").exists()
    cfg.overwrite = False
    result = score(cfg)
    assert result.status == "already complete" and not (tmp_path / "o" / ".anglecurate").exists()
    ranked = read_ranked(tmp_path / "o")
    assert ranked.equals(first)
    assert ranked.height == 50 and ranked["rank"].to_list() == list(range(50))
