"""The Python API: the CLI is a thin layer over it (same results, same one-line errors), it
is quiet unless asked, and the example in docs/api.md runs as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import anglecurate as ac

from .helpers import read_ranked, run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_importing_anglecurate_stays_light():
    heavy = "('torch', 'polars', 'transformers')"
    code = f"import sys, anglecurate as ac; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_api_and_the_cli_write_the_same_ranking(tiny_model_dir, math_json, tmp_path, monkeypatch, capsys):
    options = {"field": "problem", "dtype": "fp32", "layers": "0,-1", "w_inter": 8.0}
    result = ac.score(tiny_model_dir, math_json, tmp_path / "api", **options)
    assert isinstance(result, ac.ScoreResult)
    assert result.status == "complete" and result.counts["scored"] == 40
    assert result.path == tmp_path / "api" and result.timing["rows_this_run"] == 40
    assert capsys.readouterr().err == "", "no progress bar or summary unless asked"

    cli = ["score", "--model", tiny_model_dir, "--data", math_json, "--out", tmp_path / "cli"]
    cli += ["--field", "problem", "--dtype", "fp32", "--layers", "0,-1", "--w-inter", "8"]
    code, _, err = run_cli(monkeypatch, capsys, *cli)
    assert code == 0, err
    assert read_ranked(tmp_path / "cli").equals(read_ranked(tmp_path / "api"))
    lazy = ac.read_ranking(tmp_path / "api")
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.select("rank").collect()["rank"].to_list() == list(range(40))


def test_errors_raise_the_message_the_cli_prints(tiny_model_dir, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(ac.UserError) as info:
        ac.score(tiny_model_dir, missing, tmp_path / "o")
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", tiny_model_dir, "--data", missing, "--out", tmp_path / "o"
    )
    assert code == 2 and err.strip() == f"error: {info.value}"
    with pytest.raises(ac.UserError, match="unknown option 'wintra'; options: .*w_intra"):
        ac.score(tiny_model_dir, missing, tmp_path / "o", wintra=1.0)
    with pytest.raises(ac.UserError, match="unknown option 'sigmaa'"):
        ac.schedule(tmp_path, tmp_path / "s", 8, sigmaa=3)
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda p: ac.score("m", "d", p, unknown=1), {"devices", "engine", "num_workers", "ray_address",
                                                      "shard", "progress", "dtype", "w_intra", "model"}),
        (lambda p: ac.validate(p, unknown=1), {"progress", "sample", "target", "ranking"}),
        (lambda p: ac.calibrate(p, unknown=1), {"progress", "log", "model", "rows", "sample",
                                                "samples_per_prompt", "ranking"}),
        (lambda p: ac.schedule(p, p / "s", 8, unknown=1), {"epochs", "export", "overwrite", "sigma", "mu0"}),
        (lambda p: ac.pilot("m", "d", p, field="f", answer_field="a", unknown=1),
         {"arms", "progress", "seeds", "num_generations", "learning_rate", "field"}),
    ],
)  # fmt: skip
def test_an_unknown_option_lists_every_keyword_the_function_takes(tmp_path, call, expected):
    with pytest.raises(ac.UserError) as info:
        call(tmp_path)
    message = str(info.value)
    assert "got an unknown option 'unknown'; options: " in message and "\n" not in message
    listed = message.split("options: ")[1].split(", ")
    assert expected <= set(listed) and listed == sorted(listed), message
    assert "grpo" not in listed and "unknown" not in listed and "options" not in listed


def test_rank_validate_report_and_schedules_through_the_api(ranking, tmp_path):
    folder = tmp_path / "ranking"
    subprocess.run(["cp", "-r", str(ranking), str(folder)], check=True)
    ranked = ac.rank(folder, layer=1, w_inter=0.0)
    assert ranked.status == "re-ranked" and ranked.manifest["ranking"]["layer"] == 1

    checked = ac.validate(folder, sample=8, bootstrap=20, permutations=20, dtype="fp32")
    assert isinstance(checked, ac.ValidateResult)
    assert json.loads(checked.json_path.read_text()) == json.loads(json.dumps(checked.report))
    assert pl.read_parquet(checked.parquet_path).height == 8

    page = ac.report(folder)
    assert page.html == folder / "report" / "report.html" and page.html.exists() and page.figures

    sched = ac.schedule(folder, tmp_path / "sched", 8, epochs=2, export=["trl"], sigma=5.0)
    assert sched.epochs == 2 and sched.frame.height == 16 and sched.sampler["sigma"] == 5.0
    assert (tmp_path / "sched" / "trl.parquet").exists()
    feedback = tmp_path / "feedback.jsonl"
    epoch = sched.frame.filter(pl.col("epoch") == 1)
    feedback.write_text("\n".join(json.dumps({"uid": u, "reward": 1.0}) for u in epoch["uid"]))
    step = ac.schedule_update(tmp_path / "sched", feedback)
    assert isinstance(step, ac.UpdateResult) and step.epoch == 2 and step.accuracy == 1.0


def test_the_docs_example_runs_as_written(tiny_model_dir, tmp_path, monkeypatch, capsys):
    text = DOCS.read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert code.count('"builtin:smollm2"') == 2
    code = code.replace('"builtin:smollm2"', repr(str(tiny_model_dir)))  # seconds instead of a minute
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOCS), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("complete 164 rows in ")
    assert "3 epochs of 32 in sched" in printed
    assert "error: --data no-such-file.jsonl not found" in printed
    assert ac.read_ranking(tmp_path / "ranked").select(pl.len()).collect().item() == 164
