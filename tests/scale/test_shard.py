"""Sharded runs: shards merged equal a single run (in process, after a kill, under torchrun
and with --devices), and merges refuse missing or foreign shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import polars as pl
import pytest

from anglecurate.base.errors import UserError
from anglecurate.data.shard import Shard, launcher_shard, parse_shard
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.merge import merge
from anglecurate.scoring.pipeline import score
from anglecurate.scoring.store import OutputDir

from ..helpers import KILLED_IN_RANKING, killed_after, read_ranked, run_cli

N_ROWS = 45


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("shard-data") / "q.jsonl"
    rows = [
        {"id": f"q{i}", "q": f"What is {i} times {i % 7}?" + " Explain." * (i % 4)} for i in range(N_ROWS)
    ]
    rows[5]["q"] = rows[9]["q"]  # an exact tie: same prompt, so the same score
    rows[11]["q"] = "   "  # an invalid row, skipped and counted
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def config(model, data, out, **kw) -> ScoreConfig:
    base = dict(
        model=str(model), data=str(data), out=str(out), field="q", id_field="id", dtype="fp32", chunk_rows=8
    )
    return ScoreConfig(**{**base, "skip_invalid": True, **kw})


@pytest.fixture(scope="module")
def single(tiny_model_dir, questions, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    score(config(tiny_model_dir, questions, out))
    return out


def assert_same_ranking(a, b):
    ra, rb = read_ranked(a), read_ranked(b)
    exact = ["uid", "row_index", "rank", "n_tokens", "n_prefix", "n_question", "truncated", "id", "q"]
    assert ra.select(exact).equals(rb.select(exact))
    for column in ("score", "c_intra", "c_inter"):
        assert (ra[column] - rb[column]).abs().max() < 1e-5
    ma = json.loads((a / "manifest.json").read_text())
    mb = json.loads((b / "manifest.json").read_text())
    assert ma["counts"] == mb["counts"]
    assert pl.read_parquet(a / "skipped.parquet").equals(pl.read_parquet(b / "skipped.parquet"))


def test_shard_membership_is_stable_and_partitions_the_uids():
    uids = [f"q{i}" for i in range(1000)] + list(range(1000))
    masks = [Shard(i, 4).mask(uids) for i in range(4)]
    assert sum(m.astype(int) for m in masks).tolist() == [1] * 2000  # every uid in exactly one shard
    assert all(420 < m.sum() < 580 for m in masks)  # balanced: ~500 of 2000 each
    assert Shard(1, 4).mask(["q17"])[0] == masks[1][17]  # depends on the uid, not its position
    assert parse_shard("2/5") == Shard(2, 5) and parse_shard(None).whole
    assert launcher_shard({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (Shard(1, 2), 1)
    assert launcher_shard({}) == (Shard(), None)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_shards_merge_into_the_single_run_even_after_a_kill(
    tiny_model_dir, questions, single, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    first = score(config(tiny_model_dir, questions, out, shard=Shard(0, 3)))
    assert first.status == "shard complete" and first.extra["missing_shards"] == ["1/3", "2/3"]
    with pytest.raises(UserError, match="shards 1/3, 2/3 of 3 are not finished"):
        merge(out)

    with killed_after(2), pytest.raises(KeyboardInterrupt):
        score(config(tiny_model_dir, questions, out, shard=Shard(1, 3)))
    assert OutputDir(out).done_chunks("s1of3") == {0, 1}

    assert score(config(tiny_model_dir, questions, out, shard=Shard(2, 3))).status == "shard complete"
    resumed = score(config(tiny_model_dir, questions, out, shard=Shard(1, 3)))  # the last: merges
    assert resumed.status == "complete" and resumed.chunks_resumed == 2
    assert_same_ranking(single, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["shards"] == 3 and len(manifest["device"]["shards"]) == 3
    assert manifest["timing"]["shards"] == 3
    assert not (out / ".anglecurate").exists()
    assert merge(out).status == "already complete"


def cli_args(model, data, out, *extra) -> list[str]:
    args = ["--model", model, "--data", data, "--out", out, "--field", "q", "--id-field", "id"]
    return [*map(str, args), "--dtype", "fp32", "--chunk-rows", "8", "--skip-invalid", *extra]


def _killed(*args):
    cmd = [sys.executable, "-c", KILLED_IN_RANKING, *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env())
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_a_merge_killed_with_sigkill_is_finished_by_the_same_command(
    tiny_model_dir, questions, single, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    assert score(config(tiny_model_dir, questions, out, shard=Shard(0, 2))).status == "shard complete"
    last = ["score", *cli_args(tiny_model_dir, questions, out, "--shard", "1/2")]
    _killed(*last)  # the last shard, killed -9 in its merge
    lock = out / ".anglecurate" / "ranking.lock"
    assert lock.exists() and not (out / "manifest.json").exists()

    code, _, err = run_cli(monkeypatch, capsys, *last)  # the same command again merges
    assert code == 0 and "took over the ranking lock" in err, err
    assert json.loads((out / "manifest.json").read_text())["run"]["shards"] == 2
    assert_same_ranking(single, out)
    assert not (out / ".anglecurate").exists()

    again = tmp_path / "again"  # the same kill, then `anglecurate merge` killed too, then merge
    score(config(tiny_model_dir, questions, again, shard=Shard(0, 2)))
    _killed("score", *cli_args(tiny_model_dir, questions, again, "--shard", "1/2"))
    _killed("merge", again)
    code, _, err = run_cli(monkeypatch, capsys, "merge", again)
    assert code == 0 and "is being ranked" not in err, err
    assert_same_ranking(single, again)
    assert not (again / ".anglecurate").exists()


def test_a_live_merger_leaves_the_merge_to_it(tiny_model_dir, questions, tmp_path):
    """The shard that finishes while another process merges reports "shard complete"."""
    out = tmp_path / "out"
    score(config(tiny_model_dir, questions, out, shard=Shard(0, 2)))
    hold = "import sys, time\nfrom anglecurate.scoring.store import OutputDir\n"
    hold += "with OutputDir(sys.argv[1]).ranking_lock():\n    print('held', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        result = score(config(tiny_model_dir, questions, out, shard=Shard(1, 2)))
        assert result.status == "shard complete" and result.extra["missing_shards"] == []
        with pytest.raises(UserError, match=f"is being ranked by pid {proc.pid}"):
            merge(out)
    finally:
        proc.terminate()
        proc.wait()
    assert not (out / "manifest.json").exists()
    assert merge(out).status == "complete"


def test_foreign_and_mismatched_shards_are_refused(tiny_model_dir, questions, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    score(config(tiny_model_dir, questions, out, shard=Shard(0, 2)))
    with pytest.raises(UserError, match="different shards"):
        score(config(tiny_model_dir, questions, out, shard=Shard(1, 3)))
    with pytest.raises(UserError, match="different max_length"):
        score(config(tiny_model_dir, questions, out, shard=Shard(1, 2), max_length=999))
    with pytest.raises(UserError, match="--overwrite would delete"):
        score(config(tiny_model_dir, questions, out, shard=Shard(1, 2), overwrite=True))
    marker = out / ".anglecurate" / "shards" / "s1of2.json"
    stray = json.loads((out / ".anglecurate" / "shards" / "s0of2.json").read_text())
    stray["run"]["max_length"] = 999
    marker.write_text(json.dumps(stray))
    code, _, err = run_cli(monkeypatch, capsys, "merge", out)
    assert code == 2 and "s1of2.json is from another run" in err and len(err.strip().splitlines()) == 1
    marker.unlink()
    code, _, err = run_cli(monkeypatch, capsys, "merge", out)
    assert code == 2 and "shards 1/2 of 2 are not finished" in err
    code, _, err = run_cli(monkeypatch, capsys, "merge", tmp_path / "nothing")
    assert code == 2 and "holds no scoring run" in err


def cli_env():
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def test_torchrun_ranks_score_their_shards_and_merge(tiny_model_dir, questions, single, tmp_path):
    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--data", questions, "--out", out, "--field", "q", "--id-field", "id"]
    args += ["--dtype", "fp32", "--chunk-rows", "8", "--skip-invalid", "--quiet"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    cmd += ["-m", "anglecurate", "score", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_ranking(single, out)
    assert json.loads((out / "manifest.json").read_text())["run"]["shards"] == 2


def test_devices_option_launches_one_shard_per_device(tiny_model_dir, questions, single, tmp_path):
    """A new folder: "complete" and the timing line of the whole launch, as a single run
    prints; the same command on the finished folder: "already complete"."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anglecurate", "score", *cli_args(tiny_model_dir, questions, out)]
    cmd += ["--devices", "cpu,cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert lines[0].startswith("complete: ") and "already" not in done.stderr, done.stderr
    rows = json.loads((single / "manifest.json").read_text())["timing"]["rows_this_run"]
    assert any(line.startswith(f"{rows:,} rows in ") and "tokens/s" in line for line in lines), lines
    assert_same_ranking(single, out)

    again = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=cli_env(), timeout=600)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "already complete"
    bad = subprocess.run([*cmd[:-2], "--devices", "gpu0"], capture_output=True, text=True, env=cli_env())
    assert bad.returncode == 2 and "--devices 'gpu0'" in bad.stderr


def test_ray_engine_resumes_a_killed_run_and_equals_the_single_run(
    tiny_model_dir, questions, single, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray")
    from anglecurate.scale.cluster import score_on_ray

    out = tmp_path / "out"
    with killed_after(2), pytest.raises(KeyboardInterrupt):
        score(config(tiny_model_dir, questions, out))  # a local run killed after two chunks

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local cluster: two CPU actors
    try:
        result = score_on_ray(config(tiny_model_dir, questions, out), num_workers=2)
    finally:
        ray.shutdown()
    assert result.status == "complete" and result.chunks_resumed == 2
    assert result.manifest["device"]["engine"] == "ray"
    assert_same_ranking(single, out)


def test_ray_engine_errors(tiny_model_dir, questions, tmp_path, monkeypatch, capsys):
    args = ["score", "--model", tiny_model_dir, "--data", questions, "--out", tmp_path / "o"]
    args += ["--engine", "ray"]
    code, _, err = run_cli(monkeypatch, capsys, *args, "--num-workers", 0)
    assert code == 2 and "--num-workers must be at least 1" in err
    code, _, err = run_cli(monkeypatch, capsys, *args, "--devices", "cpu,cpu")
    assert code == 2 and "--devices runs its own shards" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and "pip install 'anglecurate[ray]'" in err
