"""Faults a long run meets, injected for real: a second writer, a full disk, a read-only
folder, SIGTERM. Each ends in one line and a non-zero exit, loses nothing, and the same
command then resumes to exactly the result of a clean run."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from anglecurate.scoring.store import OutputDir
from anglecurate.storage.lock import LOCK_NAME

from ..helpers import read_ranked, run_cli

ROWS = 240
CHUNK = 24


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "q.jsonl"
    rows = [{"prompt": f"What is {i} times {i + 7}?" + " Explain each step." * (i % 5)} for i in range(ROWS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def clean(tiny_model_dir, questions, tmp_path_factory):
    """The ranking of an undisturbed run, to compare every recovered run with."""
    out = tmp_path_factory.mktemp("clean") / "out"
    subprocess.run(_cmd(tiny_model_dir, questions, out), check=True)
    return read_ranked(out)


def _args(model, data, out):
    return ["score", "--model", model, "--data", data, "--out", out, "--dtype", "fp32"] + [
        "--chunk-rows",
        str(CHUNK),
        "--quiet",
    ]


def _cmd(model, data, out):
    return [sys.executable, "-m", "anglecurate", *map(str, _args(model, data, out))]


def _one_line(code, err, expected_code=2):
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _no_partial_files(out):
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, leftovers
    assert not (out / LOCK_NAME).exists()


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


# -- a second writer ------------------------------------------------------------------------
def test_a_second_score_into_the_same_folder_is_refused_at_once(tiny_model_dir, questions, clean, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(_cmd(tiny_model_dir, questions, out), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / LOCK_NAME).exists() or first.poll() is not None)
        second = subprocess.run(_cmd(tiny_model_dir, questions, out), capture_output=True, text=True)
        line = _one_line(second.returncode, second.stderr)
        assert line.startswith(f"error: {out} is being written by pid {first.pid} on ")
        assert "anglecurate score" in line and "--out" in line
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert read_ranked(out).equals(clean)
    assert not (out / LOCK_NAME).exists()


def test_rank_and_validate_wait_their_turn_too(ranking, monkeypatch, capsys):
    hold = (
        "import sys, time\nfrom anglecurate.storage.lock import folder_lock\nwith folder_lock(sys.argv[1]):\n"
    )
    hold += "    print('held', flush=True)\n    time.sleep(60)\n"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(ranking)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["rank", ranking, "--layer", "1"], ["validate", "--ranking", ranking]):
            code, _, err = run_cli(monkeypatch, capsys, *args)
            assert f"is being written by pid {holder.pid}" in _one_line(code, err)
    finally:
        holder.terminate()
        holder.wait()


# -- a full disk ----------------------------------------------------------------------------
def _disk_full(allowed: int, style: str):
    """A ``DataFrame.write_parquet`` whose chunk writes fail with ENOSPC after ``allowed`` of
    them, as a filling disk does: a Python OSError, or polars' own error with the OS error
    inside its message. The failing write leaves a partial file, as a real one does."""
    real = pl.DataFrame.write_parquet
    left = [allowed]

    def write_parquet(frame, file, *args, **kwargs):
        if ".chunk-" in str(file):
            if left[0] == 0:
                with open(file, "wb") as f:
                    f.write(b"PAR1")
                if style == "oserror":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
                raise pl.exceptions.ComputeError("write failed: No space left on device (os error 28)")
            left[0] -= 1
        return real(frame, file, *args, **kwargs)

    return write_parquet


@pytest.mark.parametrize("style", ["oserror", "polars"])
def test_a_full_disk_mid_run_is_one_line_and_the_rerun_resumes(
    tiny_model_dir, questions, clean, tmp_path, monkeypatch, capsys, style
):
    out = tmp_path / "out"
    monkeypatch.setattr(pl.DataFrame, "write_parquet", _disk_full(3, style))
    code, _, err = run_cli(monkeypatch, capsys, *_args(tiny_model_dir, questions, out))
    line = _one_line(code, err)
    assert line == (
        f"error: no space left on device while writing {OutputDir(out).chunk_path(3)}; "
        "free space and rerun the same command to resume"
    )
    assert OutputDir(out).done_chunks() == {0, 1, 2}, "finished chunks are kept"
    _no_partial_files(out)

    monkeypatch.undo()  # space freed
    code, _, err = run_cli(monkeypatch, capsys, *_args(tiny_model_dir, questions, out))
    assert code == 0, err
    assert read_ranked(out).equals(clean)


@contextlib.contextmanager
def _tmpfs(path, size: str, *options: str):
    """A real, tiny file system (root only; skipped where mounting is not allowed)."""
    path.mkdir()
    opts = ",".join([f"size={size}", *options])
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"mounting a tmpfs was refused: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_real_full_disk_then_freed_space_resumes_exactly(tiny_model_dir, questions, clean, tmp_path):
    with _tmpfs(tmp_path / "disk", "48k") as disk:  # room for a few chunks, not all
        out = disk / "out"
        failed = subprocess.run(_cmd(tiny_model_dir, questions, out), capture_output=True, text=True)
        line = _one_line(failed.returncode, failed.stderr)
        assert line.startswith("error: no space left on device while writing ")
        assert line.endswith("; free space and rerun the same command to resume")
        assert f"{out}/" in line, line
        _no_partial_files(out)
        kept = OutputDir(out).done_chunks()
        assert kept, "chunks finished before the disk filled are kept"

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        resumed = subprocess.run(_cmd(tiny_model_dir, questions, out), capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert read_ranked(out).equals(clean)


# -- a read-only folder ---------------------------------------------------------------------
def test_a_read_only_output_folder_is_one_line_and_nothing_is_written(
    tiny_model_dir, questions, clean, tmp_path
):
    with _tmpfs(tmp_path / "ro", "4m", "ro") as ro:
        failed = subprocess.run(_cmd(tiny_model_dir, questions, ro), capture_output=True, text=True)
        line = _one_line(failed.returncode, failed.stderr)
        assert line.startswith(f"error: read-only file system while writing {ro}")
        assert "choose a writable folder" in line
        assert not any(ro.iterdir())

        subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)  # made writable
        subprocess.run(_cmd(tiny_model_dir, questions, ro), check=True)
        assert read_ranked(ro).equals(clean)


def test_a_read_only_ranking_gets_its_report_elsewhere_but_not_inside(ranking, tmp_path, monkeypatch, capsys):
    with _tmpfs(tmp_path / "ro", "4m") as ro:
        copy = ro / "ranking"
        subprocess.run(["cp", "-r", str(ranking), str(copy)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        code, _, err = run_cli(monkeypatch, capsys, "report", "--ranking", copy)
        assert "read-only file system while writing" in _one_line(code, err)
        code, _, err = run_cli(monkeypatch, capsys, "report", "--ranking", copy, "--out", tmp_path / "r")
        assert code == 0, err
        assert (tmp_path / "r" / "report.html").exists()


# -- SIGTERM --------------------------------------------------------------------------------
def test_sigterm_mid_run_keeps_finished_chunks_and_the_rerun_resumes(
    tiny_model_dir, questions, clean, tmp_path
):
    out = tmp_path / "out"
    proc = subprocess.Popen(_cmd(tiny_model_dir, questions, out), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(OutputDir(out).done_chunks()) >= 2 or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    line = _one_line(proc.returncode, err, expected_code=143)
    assert line == "terminated (SIGTERM): finished chunks are kept; rerun the same command to resume"
    done = OutputDir(out).done_chunks()
    assert 2 <= len(done) < ROWS // CHUNK, "the signal should land mid-run"
    _no_partial_files(out)

    subprocess.run(_cmd(tiny_model_dir, questions, out), check=True)
    assert read_ranked(out).equals(clean)
