"""Trainer exports: every original column, the scored conversation as ``prompt``, schedule
order; OpenRLHF's own dataset code reads a stage file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import polars as pl
import pytest

from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule, update_schedule
from anglecurate.scoring.prompt import build_conversation, load_prompt_config

from ..helpers import read_ranked, run_cli


@pytest.fixture
def exported(ranking, tmp_path):
    cfg = ScheduleConfig(
        str(ranking),
        str(tmp_path / "s"),
        per_epoch=8,
        epochs=2,
        seed=5,
        sampler={"sigma": 4.0},
        batch_multiple=4,
        exports=("trl", "verl", "openrlhf"),
    )
    create_schedule(cfg)
    return tmp_path / "s"


def test_rows_and_flattened_schedule_keep_every_column(ranking, exported):
    ranked = read_ranked(ranking).sort("rank")
    rows = pl.read_parquet(exported / "rows.parquet")
    assert rows.columns == ["uid", "rank", "prompt", "id", "question", "answer"]
    assert rows["uid"].to_list() == ranked["uid"].to_list()
    assert rows.select("id", "question", "answer").equals(ranked.select("id", "question", "answer"))
    default = load_prompt_config("default")
    first = rows.row(0, named=True)
    assert first["prompt"] == build_conversation(first["question"], default)[0]
    assert first["prompt"][0]["role"] == "system" and first["prompt"][-1]["content"] == first["question"]

    schedule = pl.read_parquet(exported / "schedule.parquet")
    flat = pl.read_parquet(exported / "trl.parquet")
    assert flat.columns == ["epoch", "position", *rows.columns]
    assert flat.select(schedule.columns).equals(schedule)
    assert flat.drop("epoch", "position").equals(rows[schedule["rank"]])  # rank r is row r of rows


def test_update_rewrites_every_export(exported, tmp_path):
    feedback = tmp_path / "fb.jsonl"
    feedback.write_text(json.dumps({"accuracy": 0.9}) + "\n")
    update_schedule(exported, feedback)
    schedule = pl.read_parquet(exported / "schedule.parquet")
    assert schedule["epoch"].max() == 2
    flat = pl.read_parquet(exported / "trl.parquet")
    assert flat.select("epoch", "position", "uid").equals(schedule.select("epoch", "position", "uid"))
    stages = sorted((exported / "openrlhf").iterdir())
    assert [p.name for p in stages] == ["epoch-00000.jsonl", "epoch-00001.jsonl", "epoch-00002.jsonl"]
    last = pl.read_ndjson(stages[-1])
    assert last["uid"].to_list() == schedule.filter(pl.col("epoch") == 2)["uid"].to_list()


def test_openrlhf_reads_a_stage_with_its_own_dataset_code(exported, tokenizer):
    pytest.importorskip("openrlhf")
    from openrlhf.datasets import PromptDataset
    from openrlhf.datasets.utils import blending_datasets

    data_args = SimpleNamespace(input_key="prompt", label_key="answer", apply_chat_template=True)
    strategy = SimpleNamespace(
        print=lambda *a, **k: None, is_rank_0=lambda: True, args=SimpleNamespace(use_ms=False, data=data_args)
    )
    stage = exported / "openrlhf" / "epoch-00001.jsonl"
    data = blending_datasets(str(stage), None, strategy)
    prompts = PromptDataset(data, tokenizer, strategy)
    epoch = pl.read_parquet(exported / "trl.parquet").filter(pl.col("epoch") == 1)
    assert len(prompts) == epoch.height == 8
    expected = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in epoch["prompt"]
    ]
    assert [prompts[i][1] for i in range(len(prompts))] == expected
    assert [prompts[i][2] for i in range(len(prompts))] == epoch["answer"].to_list()


def test_message_prompts_are_kept_as_they_are(tiny_model_dir, tmp_path):
    """verl's layout already has a ``prompt`` column; exports must not touch it."""
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import score

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Compute {i} + {i}."}],
            "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
            "data_source": "toy",
        }
        for i in range(12)
    ]
    pl.DataFrame(rows).write_parquet(tmp_path / "verl.parquet")
    out = tmp_path / "out"
    score(
        ScoreConfig(
            model=str(tiny_model_dir), data=str(tmp_path / "verl.parquet"), out=str(out), dtype="fp32"
        )
    )
    create_schedule(ScheduleConfig(str(out), str(tmp_path / "s"), per_epoch=4, exports=("verl",)))
    exported = pl.read_parquet(tmp_path / "s" / "rows.parquet").sort("uid")
    assert exported.columns == ["uid", "rank", "prompt", "reward_model", "data_source"]
    assert exported.drop("uid", "rank").to_dicts() == rows  # uid is the row index here


def test_export_errors(ranking, tmp_path, monkeypatch, capsys):
    def fails(*args, needle):
        code, _, err = run_cli(
            monkeypatch, capsys, "schedule", "--ranking", ranking, "--out", tmp_path / "s", *args
        )
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "s").exists()

    fails("--per-epoch", 10, "--batch-multiple", 4, needle="use 8 or 12")
    fails("--per-epoch", 8, "--export", "deepspeed", needle="unknown --export 'deepspeed'")
    fails("--per-epoch", 8, "--batch-multiple", 0, needle="at least 1")


@pytest.mark.parametrize("prompt_config, warned", [("default", True), ("none", False)])
def test_schedule_warns_when_the_trained_prompt_is_not_the_scored_one(
    tiny_model_dir, tmp_path, monkeypatch, capsys, prompt_config, warned
):
    """verl's layout: the trainers read ``prompt``. Scored with the R1 prompt, the ranking
    describes a system prompt and worked example the policy never sees; scored bare, it
    describes what is trained."""
    rows = [{"prompt": [{"role": "user", "content": f"Compute {i} + {i}."}], "n": i} for i in range(12)]
    pl.DataFrame(rows).write_parquet(tmp_path / "verl.parquet")
    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--data", tmp_path / "verl.parquet", "--out", out]
    code, _, err = run_cli(monkeypatch, capsys, "score", *args, "--prompt-config", prompt_config)
    assert code == 0, err
    code, _, err = run_cli(
        monkeypatch, capsys, "schedule", "--ranking", out, "--out", tmp_path / "s", "--per-epoch", "4",
        "--export", "verl",
    )  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    if warned:
        assert warnings == [
            "warning: 12 of 12 rows' 'prompt' column (what the trainers read) differs from the "
            "conversation scored (--field prompt, --prompt-config default); score with the "
            "rendering you train in, or drop the column so the exports carry the scored one"
        ]
    else:
        assert warnings == []
