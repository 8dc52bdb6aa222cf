"""`anglecurate schedule`: open-loop and closed-loop schedules from a real ranking."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch

from anglecurate.base.errors import UserError
from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule, update_schedule

from ..helpers import read_ranked, run_cli


def test_open_loop_walks_the_ranking(ranking, tmp_path):
    cfg = ScheduleConfig(
        str(ranking), str(tmp_path / "s"), per_epoch=10, epochs=3, seed=3, sampler={"sigma": 4.0}
    )
    frame, params = create_schedule(cfg)
    assert params.sigma == 4.0 and params.n == pytest.approx(500 * 40 / 7500)  # given vs scaled
    state = json.loads((tmp_path / "s" / "state.json").read_text())
    assert state["initial"]["params"]["sigma"] == 4.0 and state["initial"]["epoch"] == 0
    on_disk = pl.read_parquet(tmp_path / "s" / "schedule.parquet")
    assert on_disk.equals(frame) and on_disk.columns == ["epoch", "position", "uid", "rank"]
    assert on_disk.group_by("epoch").len().sort("epoch")["len"].to_list() == [10, 10, 10]
    means = on_disk.group_by("epoch").agg(pl.col("rank").mean()).sort("epoch")["rank"].to_list()
    assert means[0] < means[1] < means[2]  # centre moves 0 -> 19.5 -> 39
    ranked = read_ranked(ranking)
    uid_at = dict(zip(ranked["rank"], ranked["uid"], strict=True))
    assert all(uid_at[r] == u for r, u in zip(on_disk["rank"], on_disk["uid"], strict=True))
    for epoch in on_disk.partition_by("epoch"):
        assert epoch["rank"].n_unique() == 10 and epoch["rank"].is_sorted()
    indices = torch.load(tmp_path / "s" / "gainrl_indices.pt")
    assert indices.dtype == torch.long and indices.tolist() == ranked.sort("rank")["row_index"].to_list()
    scores = ranked.sort("row_index")["score"].to_numpy()
    assert torch.equal(indices, torch.argsort(torch.tensor(scores), descending=True, stable=True))
    again, _ = create_schedule(replace(cfg, out=str(tmp_path / "s2")))
    assert again.equals(frame)  # same ranking + seed: same schedule, bit for bit


def test_closed_loop_update_applies_the_gainrl_rule(ranking, tmp_path, monkeypatch, capsys):
    s = tmp_path / "s"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "schedule",
        "--ranking",
        ranking,
        "--out",
        s,
        "--per-epoch",
        8,
        "--n",
        10,
        "--sigma",
        5,
    )
    assert code == 0, err
    assert "sampler: sigma 5, n 10, adj [0, 5.33333]" in out
    epoch0 = pl.read_parquet(s / "schedule.parquet")
    feedback = tmp_path / "fb.jsonl"
    rewards = [2, 0, 2, 2, 0, 2, 2, 2]  # a 0/2 reward, normalised with --reward-max 2
    feedback.write_text(
        "\n".join(json.dumps({"uid": u, "reward": r}) for u, r in zip(epoch0["uid"], rewards, strict=True))
    )
    code, out, err = run_cli(
        monkeypatch, capsys, "schedule", "update", "--schedule", s, "--feedback", feedback, "--reward-max", 2
    )
    assert code == 0, err
    state = json.loads((s / "state.json").read_text())
    expected = min(max(10 * math.tanh(2 * (0.75 - 0.5)), 0), 1000 * 40 / 7500)  # adj_max scaled to N
    assert state["sampler"]["mu"] == pytest.approx(expected)
    assert state["sampler"]["epoch"] == 2
    both = pl.read_parquet(s / "schedule.parquet")
    assert both["epoch"].unique().sort().to_list() == [0, 1]
    assert both.filter(pl.col("epoch") == 0).equals(epoch0)
    with pytest.raises(UserError, match="last epoch does not hold"):
        update_schedule(s, feedback, reward_max=2)  # epoch 0's feedback again: refused
    epoch1 = both.filter(pl.col("epoch") == 1).select("uid", reward=pl.lit(1.0))
    epoch1.write_ndjson(feedback)
    _, info = update_schedule(s, feedback)
    assert info["epoch"] == 2 and info["accuracy"] == 1.0


def test_schedule_errors(ranking, tmp_path, monkeypatch, capsys):
    def fails(*args, needle):
        code, _, err = run_cli(monkeypatch, capsys, "schedule", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err

    fails(
        "--ranking",
        tmp_path / "none",
        "--out",
        tmp_path / "s",
        "--per-epoch",
        5,
        needle="does not exist; pass the --out folder of a finished `anglecurate score`",
    )
    fails("--ranking", ranking, "--out", tmp_path / "s", "--per-epoch", 41, needle="per-epoch size 41")
    fails("--ranking", ranking, "--out", tmp_path / "s", needle="--per-epoch")
    fails("--ranking", ranking, "--out", tmp_path / "s", "--per-epoch", 5, "--sigma", 0, needle="sigma")
    create_schedule(ScheduleConfig(str(ranking), str(tmp_path / "s"), per_epoch=5))
    fails("--ranking", ranking, "--out", tmp_path / "s", "--per-epoch", 5, needle="already holds a schedule")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"uid": "q1", "score": 1}\n')
    fails("update", "--schedule", tmp_path / "s", "--feedback", bad, needle="neither a 'reward'")
    acc = tmp_path / "acc.jsonl"
    acc.write_text('{"accuracy": 1.5}\n')
    fails("update", "--schedule", tmp_path / "s", "--feedback", acc, needle="[0, 1]")
    fails("update", "--schedule", tmp_path / "nothing", "--feedback", acc, needle="holds no schedule")


def test_missing_feedback_is_named_without_a_hub_lookup(ranking, tmp_path, monkeypatch, capsys):
    """`schedule update --feedback missing.jsonl`: the --feedback option is named, and the
    path is never tried as a hub dataset id."""
    from anglecurate.data import sources

    create_schedule(ScheduleConfig(str(ranking), str(tmp_path / "s"), per_epoch=5))

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the hub")

    monkeypatch.setattr(sources, "_hub", no_hub)
    monkeypatch.chdir(tmp_path)
    for given, said in [
        ("missing.jsonl", "not found"),
        ("org/missing.jsonl", "not found"),
        (".", "is not a file"),
    ]:
        code, _, err = run_cli(
            monkeypatch, capsys, "schedule", "update", "--schedule", "s", "--feedback", given
        )
        assert code == 2 and err.startswith(f"error: --feedback {given} {said}") and err.count("\n") == 1, err


def test_exports_take_comma_lists_and_are_written_once(ranking, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    args = ["--ranking", ranking, "--out", out, "--per-epoch", 5]
    args += ["--export", "trl,openrlhf", "--export", "trl"]
    code, stdout, err = run_cli(monkeypatch, capsys, "schedule", *args)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"wrote 1 epochs of 5 to {out} with exports trl, openrlhf"
    assert json.loads((out / "state.json").read_text())["exports"] == ["openrlhf", "trl"]
    assert (out / "trl.parquet").is_file() and (out / "openrlhf" / "epoch-00000.jsonl").is_file()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    named = re.findall(r"sched/openrlhf/([\w.-]+\.jsonl)", readme)  # the files the README names
    assert named and all((out / "openrlhf" / name).is_file() for name in named), named


def test_a_schedule_from_a_folder_that_is_no_ranking_names_the_right_one(
    ranking, tmp_path, monkeypatch, capsys
):
    """A schedule folder, an empty folder or a pilot folder passed as --ranking: the line
    names what to pass, never `score --out` into that folder."""
    create_schedule(ScheduleConfig(str(ranking), str(tmp_path / "s"), per_epoch=5))
    (tmp_path / "empty").mkdir()
    (tmp_path / "pilot" / "ranking").mkdir(parents=True)
    (tmp_path / "pilot" / "ranking" / "manifest.json").write_text("{}")
    cases = {
        "s": "s is a schedule folder, not a ranking; pass the ranking it was drawn from: "
        f"{ranking.resolve()}",
        "empty": "empty holds no ranking (no manifest.json); pass the --out folder of a finished "
        "`anglecurate score`, or score one into a new folder",
        "pilot": "; pilot/ranking is one",
    }
    monkeypatch.chdir(tmp_path)
    for given, said in cases.items():
        code, _, err = run_cli(
            monkeypatch, capsys, "schedule", "--ranking", given, "--out", "new", "--per-epoch", 5
        )
        assert code == 2 and err.count("\n") == 1 and said in err, err
        assert f"--out {given}" not in err
        assert not (tmp_path / "new").exists()


def test_a_schedule_into_its_own_ranking_folder_is_refused(ranking, tmp_path, monkeypatch, capsys):
    before = sorted(p.name for p in ranking.iterdir())
    for out in (ranking, f"{ranking}/"):
        code, _, err = run_cli(
            monkeypatch, capsys, "schedule", "--ranking", ranking, "--out", out, "--per-epoch", 5
        )
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: --out {ranking} is the ranking folder; write the schedule to a folder")
    assert sorted(p.name for p in ranking.iterdir()) == before
