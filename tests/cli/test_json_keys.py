"""Every command's ``--json`` output has the top-level keys docs/formats.md lists for it.

Each command is run for real on the tiny model. Its documented keys are the backticked
names in the first column of the first ``| key | meaning |`` table under its heading in
docs/formats.md (a dotted name, ``cost.planned``, counts as its first part); the keys
printed must be exactly those, no more, no fewer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ..helpers import run_cli

FORMATS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def documented_keys(heading: str) -> set[str]:
    """The keys of the first key table under the heading ``heading`` (its text, any level)."""
    lines = FORMATS.read_text().splitlines()
    titles = [i for i, line in enumerate(lines) if re.fullmatch(r"#+ " + re.escape(heading), line)]
    assert len(titles) == 1, f"docs/formats.md: {len(titles)} headings {heading!r}"
    keys: set[str] = set()
    rows = None
    for line in lines[titles[0] + 1 :]:
        if line.startswith("#"):
            break
        if rows is None and line.startswith("| key | meaning |"):
            rows = []
            continue
        if rows is not None:
            if not line.startswith("|"):
                break
            first = line.split("|")[1]
            keys |= {name.split(".")[0] for name in re.findall(r"`([^`]+)`", first)}
    assert keys, f"docs/formats.md: no `| key | meaning |` table under {heading!r}"
    return keys - {"---"}


def _json(monkeypatch, capsys, *args) -> dict:
    code, out, err = run_cli(monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i}?" + " Show it." * (i % 3), "answer": str(2 * i)}
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score(model, data, out, *extra):
    base = ["score", "--model", model, "--data", data, "--out", out, "--dtype", "fp32"]
    return [*base, "--field", "question", "--id-field", "id", *extra]


def test_score_merge_and_rank(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    want = documented_keys("`score`, `merge` and `rank`")
    out = tmp_path / "out"
    complete = _json(monkeypatch, capsys, *_score(tiny_model_dir, data, out))
    assert complete["status"] == "complete" and set(complete) == want
    again = _json(monkeypatch, capsys, *_score(tiny_model_dir, data, out))
    assert again["status"] == "already complete" and set(again) == want
    reranked = _json(monkeypatch, capsys, "rank", out, "--w-inter", "8")
    assert reranked["status"] == "re-ranked" and set(reranked) == want
    assert reranked["timing"] == complete["timing"]  # the scoring run's, as documented

    sharded = tmp_path / "sharded"
    first = _json(monkeypatch, capsys, *_score(tiny_model_dir, data, sharded, "--shard", "0/2"))
    assert first["status"] == "shard complete"
    assert set(first) == documented_keys("A shard of `score`")
    last = _json(monkeypatch, capsys, *_score(tiny_model_dir, data, sharded, "--shard", "1/2"))
    assert last["status"] == "complete" and set(last) == want  # the last shard merged
    merged = _json(monkeypatch, capsys, "merge", sharded)
    assert set(merged) == want


def test_validate_calibrate_and_schedule(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, *_score(tiny_model_dir, data, out, "-q"))
    assert code == 0, err
    small = ["--bootstrap", "20", "--device", "cpu", "--dtype", "fp32"]
    report = _json(
        monkeypatch,
        capsys,
        *["validate", "--ranking", out, "--sample", "8", "--permutations", "20", *small],
        *["--rl-samples", "2", "--max-new-tokens", "2", "--reward", "number"],
    )
    assert set(report) == documented_keys("`validate.json`")
    summary = _json(
        monkeypatch,
        capsys,
        *["calibrate", "--ranking", out, "--sample", "4", "--samples-per-prompt", "2"],
        *["--max-new-tokens", "2", "--folds", "2", "--engine", "hf", *small],
    )
    assert set(summary) == documented_keys("`calibrate.json`")

    schedule = tmp_path / "s"
    drawn = _json(monkeypatch, capsys, "schedule", "--ranking", out, "--out", schedule, "--per-epoch", "4")
    assert set(drawn) == documented_keys("`schedule --json`")
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text(json.dumps({"accuracy": 0.75}) + "\n")
    updated = _json(monkeypatch, capsys, "schedule", "update", "--schedule", schedule, "--feedback", feedback)
    assert set(updated) == documented_keys("`schedule update --json`")


def test_pilot(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    pytest.importorskip("trl")
    summary = _json(
        monkeypatch,
        capsys,
        *["pilot", "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "p"],
        *["--field", "question", "--id-field", "id", "--arms", "uniform", "--seeds", "1"],
        *["--steps", "1", "--eval-every", "1", "--eval-rows", "4", "--num-generations", "2"],
        *["--prompts-per-step", "2", "--max-completion-length", "2"],
    )
    assert set(summary) == documented_keys("`pilot.json`")
