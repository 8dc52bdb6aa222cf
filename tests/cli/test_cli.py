"""The command line: every user mistake is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

from ..helpers import run_cli


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?"} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _score(model, data, out, *extra):
    return ["score", "--model", model, "--data", data, "--out", out, "--dtype", "fp32", *extra]


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


HEAVY = ("torch", "transformers", "polars", "numpy", "pyarrow", "datasets")  # not rich: typer renders help
# `anglecurate --help` in a fresh interpreter, then the heavy libraries it loaded, on stderr.
HELP = f"""
import sys
import anglecurate
print("import:", *sorted(set(sys.modules) & set({HEAVY!r})), file=sys.stderr)
from anglecurate.cli import main
sys.argv = ["anglecurate", "--help"]
try:
    main()
finally:
    print("help:", *sorted(set(sys.modules) & set({HEAVY!r})), file=sys.stderr)
"""


def test_help_lists_commands_without_loading_the_heavy_libraries():
    """`import anglecurate` and `anglecurate --help` load none of torch, transformers, polars
    (the commands load them when they run). How long they take: benchmarks/bench_startup.py."""
    done = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "score" in done.stdout and "inspect" in done.stdout and "show" in done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines[-2:] == ["import:", "help:"], done.stderr


def test_score_json_summary_and_show(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        monkeypatch,
        capsys,
        *_score(tiny_model_dir, data, out, "--field", "question", "--id-field", "id", "--json"),
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["status"] == "complete" and summary["scored"] == 6 and summary["rows"] == 6
    ranked = pl.read_parquet(out / "ranked")
    assert all(u == f"q{r}" for u, r in zip(ranked["uid"], ranked["row_index"], strict=True))
    code, stdout, _ = run_cli(monkeypatch, capsys, "show", out, "-n", "2")
    assert code == 0 and "top 2" in stdout and "bottom 2" in stdout and "What is" in stdout


def test_inspect_shows_segments(monkeypatch, capsys, tiny_model_dir, data):
    code, stdout, _ = run_cli(
        monkeypatch,
        capsys,
        "inspect",
        "--model",
        tiny_model_dir,
        "--data",
        data,
        "--field",
        "question",
        "--row",
        "3",
    )
    assert code == 0
    assert "What is 3 + 3?" in stdout and "prefix" in stdout and "question" in stdout


def test_inspect_names_a_bad_row_by_its_line(monkeypatch, capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine?"}\n\n\n{"question": ""}\n')
    args = ["inspect", "--model", tiny_model_dir, "--data", path, "--field", "question", "--row", "1"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    _one_line_error(code, err, f"{path} line 4 (--row 1): empty question")


@pytest.mark.parametrize(
    "case,needles",
    [
        ("missing-data", ["not found", "--data"]),
        ("data-dir", ["folder with no data files"]),
        ("malformed-line", [":2:", "malformed JSON"]),
        ("missing-field", ["no column 'prompt'", "--field"]),
        ("empty-question", ["empty.jsonl line 3: empty question", "--skip-invalid"]),
        ("empty-question-parquet", ["empty.parquet row 1: empty question", "--skip-invalid"]),
        ("missing-model", ["not found", "hub id"]),
        ("model-dir-no-config", ["no config.json"]),
        ("bad-layer", ["layer 7 does not exist", "3 layers"]),
        ("bad-layer-syntax", ["--layers"]),
        (
            "rank-layer-not-scored",
            ["--rank-layer 1 is not among the scored layers [0]; pass one", "(--layers 0,1)"],
        ),
        ("out-is-file", ["is a file"]),
        ("bad-prompt-config", ["prompt config"]),
        ("duplicate-ids", ["repeated values"]),
        ("not-utf8-jsonl", ["latin.jsonl line 4 is not UTF-8 text (byte 0xe9", "iconv -f latin1"]),
        ("not-utf8-json", ["latin.json line 3 is not UTF-8 text (byte 0xe9", "save the file as UTF-8"]),
    ],
)
def test_user_errors(monkeypatch, capsys, tiny_model_dir, data, tmp_path, case, needles):
    out = tmp_path / "out"
    model, path, extra = tiny_model_dir, data, ["--field", "question"]
    if case == "missing-data":
        path = tmp_path / "nope.jsonl"
    elif case == "data-dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif case == "malformed-line":
        path = tmp_path / "bad.jsonl"
        path.write_text('{"question": "ok"}\n{"question": oops}\n')
    elif case == "missing-field":
        extra = []
    elif case == "empty-question":  # row 1 is on line 3: the blank line counts as a line
        path = tmp_path / "empty.jsonl"
        path.write_text('{"question": "fine?"}\n\n{"question": "   "}\n')
    elif case == "empty-question-parquet":  # no lines: the row index is what finds the row
        path = tmp_path / "empty.parquet"
        pl.DataFrame({"question": ["fine?", "   "]}).write_parquet(path)
    elif case == "missing-model":
        model = tmp_path / "no-such-model"
    elif case == "model-dir-no-config":
        model = tmp_path
    elif case == "bad-layer":
        extra += ["--layers", "0,7"]
    elif case == "bad-layer-syntax":
        extra += ["--layers", "first"]
    elif case == "rank-layer-not-scored":
        extra += ["--layers", "0", "--rank-layer", "1"]
    elif case == "out-is-file":
        out = tmp_path / "file.txt"
        out.write_text("keep me")
    elif case == "bad-prompt-config":
        extra += ["--prompt-config", tmp_path / "missing.toml"]
    elif case == "duplicate-ids":
        path = tmp_path / "dup.jsonl"
        path.write_text('{"id": 1, "question": "a?"}\n{"id": 1, "question": "b?"}\n')
        extra += ["--id-field", "id"]
    elif case == "not-utf8-jsonl":  # a blank line and a \r\n line before it: editor line numbers
        path = tmp_path / "latin.jsonl"
        path.write_bytes(b'{"question": "a?"}\r\n\n{"question": "b?"}\n{"question": "caf\xe9?"}\n')
    elif case == "not-utf8-json":
        path = tmp_path / "latin.json"
        path.write_bytes(b'[\n{"question": "a?"},\n{"question": "caf\xe9?"}\n]\n')
    code, _, err = run_cli(monkeypatch, capsys, *_score(model, path, out, *extra))
    _one_line_error(code, err, *needles)
    if case == "out-is-file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()  # a refused run leaves nothing behind


def test_unsupported_model_is_refused(monkeypatch, capsys, tmp_path, data, tokenizer):
    from transformers import BertConfig, BertModel

    model_dir = tmp_path / "bert"
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=len(tokenizer),
    )
    BertModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)  # so that only the architecture is wrong
    template = tmp_path / "t.jinja"
    template.write_text(tokenizer.chat_template)
    args = _score(model_dir, data, tmp_path / "o", "--field", "question", "--chat-template", template)
    capsys.readouterr()  # drop transformers' save progress bar
    code, _, err = run_cli(monkeypatch, capsys, *args)
    _one_line_error(code, err, "not a causal language model", "decoder-only")


def test_foreign_output_folder_is_left_alone(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("important")
    code, _, err = run_cli(monkeypatch, capsys, *_score(tiny_model_dir, data, out, "--field", "question"))
    _one_line_error(code, err, "not empty")
    assert (out / "notes.txt").read_text() == "important"


def test_debug_env_shows_traceback(monkeypatch, capsys, tmp_path):
    from anglecurate.base.errors import UserError

    monkeypatch.setenv("ANGLECURATE_DEBUG", "1")
    with pytest.raises(UserError):
        run_cli(
            monkeypatch,
            capsys,
            "score",
            "--model",
            "x",
            "--data",
            tmp_path / "none.json",
            "--out",
            tmp_path / "o",
        )


def test_report_by_takes_comma_lists_and_draws_each_column_once(monkeypatch, capsys, tmp_path):
    from anglecurate.reporting.synthetic import synthetic_ranking

    root = synthetic_ranking(tmp_path / "r")
    args = ["report", "--ranking", root, "--by", "level,type", "--by", "level"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in (root / "report").glob("by_*.png")) == ["by_level.png", "by_type.png"]


def test_builtin_arithmetic_needs_no_id_field(monkeypatch, capsys, tiny_model_dir, tmp_path):
    """Its rows carry a uid of their own: taken as the id, as score and the pilot write it."""
    from anglecurate.piloting.plan import PilotConfig
    from anglecurate.scoring.config import ScoreConfig

    monkeypatch.setenv("ANGLECURATE_CACHE", str(tmp_path / "cache"))
    args = ["inspect", "--model", tiny_model_dir, "--data", "builtin:arithmetic", "--field", "problem"]
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--row", "5")
    assert code == 0, err
    assert "arith-000005" in stdout
    assert ScoreConfig(model="m", data="builtin:arithmetic", out="o").id_field == "uid"
    assert PilotConfig("m", "builtin:arithmetic", "problem", "answer", "p").id_field == "uid"
    assert ScoreConfig(model="m", data="q.jsonl", out="o").id_field is None
    code, _, err = run_cli(monkeypatch, capsys, *args, "--id-field", "level")
    _one_line_error(code, err, "builtin:arithmetic already has columns ['uid'] that anglecurate writes")
