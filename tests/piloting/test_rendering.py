"""The pilot scores what it trains: its ranking, its training prompts and its held-out
prompts are one rendering (``--prompt-config``), and a ranking given with ``--ranking``
brings its own."""

from __future__ import annotations

import json

import polars as pl
import pytest

pytest.importorskip("trl")

from anglecurate.piloting import run as pilot_run  # noqa: E402
from anglecurate.scoring.prompt import load_prompt_config  # noqa: E402

from ..helpers import run_cli  # noqa: E402
from .test_pilot import pilot_args  # noqa: E402


@pytest.fixture
def seen(monkeypatch):
    """The task every run would train on (training itself is stubbed out: these tests are
    about what reaches the trainer)."""
    tasks = []

    def record(task, arm, seed, order, progress):
        tasks.append(task)

    monkeypatch.setattr("anglecurate.piloting.train.train_one", record)
    return tasks


def _scored_prompt(folder):
    return json.loads((folder / "manifest.json").read_text())["run"]["prompt"]


def _expected(question: str, config: str) -> list[dict]:
    return [*load_prompt_config(config).context_messages(), {"role": "user", "content": question.strip()}]


@pytest.mark.parametrize("config", [None, "default"])
def test_ranking_training_and_held_out_prompts_share_one_rendering(
    monkeypatch, capsys, seen, tiny_model_dir, data, tmp_path, config
):
    out = tmp_path / "p"
    extra = ["--arms", "uniform,gainrl"] + (["--prompt-config", config] if config else [])
    code, _, err = run_cli(monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, *extra))
    assert code == 0, err
    name = config or "none"
    assert _scored_prompt(out / "ranking")["name"] == name
    (task,) = {id(t): t for t in seen}.values()
    train = pl.read_parquet(out / "data" / "train.parquet")
    held = pl.read_parquet(out / "data" / "eval.parquet")
    assert [r["prompt"] for r in task.train_rows] == [_expected(q, name) for q in train["problem"]]
    assert task.eval_prompts == [_expected(q, name) for q in held["problem"]]
    if config == "default":  # the R1 system prompt and its worked example reach the trainer
        assert task.train_rows[0]["prompt"][0]["role"] == "system"
        assert len(task.train_rows[0]["prompt"]) == 4


def test_a_given_ranking_brings_its_rendering(monkeypatch, capsys, seen, tiny_model_dir, data, tmp_path):
    ranked = tmp_path / "ranked"
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", tiny_model_dir, "--data", data, "--field", "problem",
        "--id-field", "id", "--out", ranked,
    )  # fmt: skip
    assert code == 0, err
    assert _scored_prompt(ranked)["name"] == "default"
    out = tmp_path / "p"
    args = pilot_args(tiny_model_dir, data, out, "--arms", "gainrl", "--ranking", ranked)
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    question = seen[0].train_rows[0]["prompt"][-1]["content"]
    assert seen[0].train_rows[0]["prompt"] == _expected(question, "default")

    code, _, err = run_cli(
        monkeypatch, capsys, *pilot_args(tiny_model_dir, data, tmp_path / "q", "--arms", "gainrl",
                                         "--ranking", ranked, "--prompt-config", "none"),
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and "scored with prompt config 'default'" in err
    assert not (tmp_path / "q").exists()


def test_a_ranking_scored_in_another_rendering_is_rebuilt_or_refused(
    monkeypatch, capsys, seen, tiny_model_dir, data, tmp_path
):
    """A pilot folder whose ranking was scored with the R1 prompt (as earlier versions did)
    while its runs train on bare questions: rebuilt before any run, refused after."""
    out = tmp_path / "p"
    args = pilot_args(tiny_model_dir, data, out, "--arms", "uniform,gainrl")
    code, _, err = run_cli(monkeypatch, capsys, *args, "--prompt-config", "default")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    config["prompt_config"] = None  # what an earlier version's config.json reads back as
    (out / "config.json").write_text(json.dumps(config))
    (out / "runs").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1, err
    assert "was scored with prompt config 'default'" in err and "new --out" in err
    assert _scored_prompt(out / "ranking")["name"] == "default"  # nothing lost

    (out / "runs").rmdir()
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert _scored_prompt(out / "ranking")["name"] == "none"


def test_a_model_without_a_chat_template_refuses_a_system_prompt(tiny_model_dir, tmp_path):
    from anglecurate.base.errors import UserError
    from anglecurate.piloting.plan import PilotConfig

    class NoTemplate:
        renderer = None
        prompt = load_prompt_config("default")

    cfg = PilotConfig(model="m", data="d", field="q", answer_field="a", out=str(tmp_path))
    with pytest.raises(UserError, match="no chat template"):
        pilot_run._renderer(NoTemplate(), cfg)
    NoTemplate.prompt = load_prompt_config("none")
    assert pilot_run._renderer(NoTemplate(), cfg)("What is 2 + 2?", "u0") == "What is 2 + 2?"
