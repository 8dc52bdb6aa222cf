"""calibrate's user mistakes: one line, exit 2, nothing written (no file of the ranking
folder changes); and the pure pieces it is built from."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import anglecurate as ac
from anglecurate.calibration.sample import binned_by_position, draw_sample, named_rows, order_position

from ..helpers import run_cli
from .conftest import FAST, FAST_CLI


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _without_layers(folder: Path) -> None:
    for part in (folder / "ranked").glob("part-*.parquet"):
        pl.read_parquet(part).drop("c_intra_layers", "c_inter_layers").write_parquet(part)


GREEDY = "--temperature 0 is greedy: the 4 completions of a prompt would be one answer 4 times"
MISTAKES = [
    (["--answer-field", "solution"], ["--answer-field 'solution' is not a column of", "columns: uid,"]),
    (["--samples-per-prompt", "1"], ["--samples-per-prompt 1: GRPO learns from a group's", "2 or more"]),
    (["--reward", "exact"], ["unknown --reward 'exact'; pass boxed, number, or module:function"]),
    (["--reward", "no_such_module_xyz:f"], ["cannot import no_such_module_xyz"]),
    (["--temperature", "0"], [GREEDY, "pass the training temperature"]),
    (["--sample", "3"], ["--sample 3 to roll out", "2 held-out folds need at least 4", "a larger --sample"]),
    (["--engine", "tpu"], ["unknown --engine 'tpu'"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens must be a positive integer"]),
    (["--embed"], ["holds no embeddings; score it with `anglecurate score ... --embed LAYER`"]),
]


@pytest.mark.parametrize(("args", "needles"), MISTAKES, ids=[a[0] for a, _ in MISTAKES])
def test_a_mistake_is_one_line_and_writes_nothing(copy, monkeypatch, capsys, args, needles):
    before = _snapshot(copy)
    code, out, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", copy, *FAST_CLI, *args)
    line = err.strip()
    assert code == 2 and out == "" and "\n" not in line and line.startswith("error: "), err
    for needle in needles:
        assert needle in line
    assert _snapshot(copy) == before


def test_a_ranking_without_an_answer_column_names_the_columns_it_has(copy, monkeypatch, capsys):
    for part in (copy / "ranked").glob("part-*.parquet"):
        pl.read_parquet(part).drop("answer").write_parquet(part)
    before = _snapshot(copy)
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", copy, *FAST_CLI)
    assert code == 2 and "\n" not in err.strip()
    assert "--answer-field 'answer' is not a column of" in err and "columns: uid, row_index, rank" in err
    assert "question" in err and _snapshot(copy) == before


def test_a_ranking_without_per_layer_values_names_the_option_that_stores_them(copy, monkeypatch, capsys):
    _without_layers(copy)
    before = _snapshot(copy)
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", copy, *FAST_CLI)
    assert code == 2 and "\n" not in err.strip()
    assert "stores no per-layer values (c_intra_layers, c_inter_layers missing)" in err
    assert "anglecurate score --layers all" in err and _snapshot(copy) == before


@pytest.mark.parametrize("kind", ["missing", "empty", "unfinished"])
def test_a_folder_that_is_not_a_finished_ranking_is_refused(tmp_path, monkeypatch, capsys, kind):
    folder = tmp_path / "f"
    if kind != "missing":
        folder.mkdir()
    if kind == "unfinished":  # a score run killed before its manifest
        (folder / ".anglecurate").mkdir()
        (folder / ".anglecurate" / "run.json").write_text("{}")
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", folder, *FAST_CLI)
    assert code == 2 and "\n" not in err.strip()
    expected = {"missing": "does not exist", "empty": "holds no ranking", "unfinished": "unfinished run"}
    assert expected[kind] in err
    assert (
        (not folder.exists()) if kind == "missing" else sorted(os.listdir(folder)) in ([], [".anglecurate"])
    )


def test_a_sample_larger_than_the_ranking_says_so_and_takes_every_row(copy):
    lines: list[str] = []
    result = ac.calibrate(copy, log=lines.append, **{**FAST, "sample": 100, "samples_per_prompt": 2})
    assert lines[0] == "--sample 100 is more than the 40 ranked rows; rolling out all 40"
    assert result.rollouts.height == 40 and result.summary["sample"]["asked"] == 100
    assert sorted(result.rollouts["rank"].to_list()) == list(range(40))


def test_the_api_refuses_an_unknown_option_listing_calibrates(copy):
    with pytest.raises(ac.UserError, match="got an unknown option 'k'; options: .*samples_per_prompt"):
        ac.calibrate(copy, k=4)


def test_the_sample_covers_every_stratum_and_a_callers_rows_are_placed():
    sample = draw_sample(1000, 10, seed=3)
    assert sample.size == 10 and ((sample.positions // 100) == np.arange(10)).all()
    assert draw_sample(1000, 10, seed=3).positions.tolist() == sample.positions.tolist()  # seeded
    assert draw_sample(5, 10, seed=0).everything and draw_sample(5, 10, 0).note().startswith("--sample 10")
    ranked = np.array([7, 3, 9, 1])  # row_index at each rank position
    chosen, missing = named_rows(ranked, [9, 7, 42, 9], seed=0)
    assert chosen.positions.tolist() == [0, 2] and missing == [42] and chosen.asked is None


def test_positions_in_an_order_count_the_keys_above():
    keys = np.array([0.9, 0.5, np.nan, 0.5, 0.1])
    assert order_position(keys, np.array([1.0, 0.9, 0.5, 0.3, 0.0, np.nan])).tolist() == [0, 0, 1, 3, 4, 4]
    centres, (means,), counts = binned_by_position(np.arange(10), [np.arange(10) % 2], bins=3)
    assert counts.tolist() == [4, 3, 3] and centres.tolist() == [1.5, 5.0, 8.0]
    assert means.tolist() == pytest.approx([0.5, 1 / 3, 2 / 3])
