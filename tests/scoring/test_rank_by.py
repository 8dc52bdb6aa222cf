"""`anglecurate rank --by`: any stored numeric column orders the rows, each in its stated
direction, swapped in atomically; columns added to a finished ranking (calibrate's p_pass
and learnability); `--by score` gives the angle order back bit for bit."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import polars as pl
import pytest

import anglecurate as ac
from anglecurate.base.errors import UserError
from anglecurate.scheduling.epochs import load_ranking
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.rerank import attach_columns, rerank

from ..helpers import read_ranked, run_cli


@pytest.fixture
def copy(ranking, tmp_path):
    target = tmp_path / "out"
    shutil.copytree(ranking, target)
    return target


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _calibrated(out) -> pl.DataFrame:
    """p_pass and learnability for every ranked row, as calibrate writes them: a pass rate
    that falls with the row index (q0 easiest), so the expected orders are known."""
    rows = read_ranked(out).select("row_index").sort("row_index")
    p = 1.0 - (rows["row_index"].to_numpy() + 0.5) / rows.height
    values = rows.with_columns(pl.Series("p_pass", p), pl.Series("learnability", p * (1 - p)))
    attach_columns(out, values, {"by": "test"})
    return values


def _order(out) -> list:
    return read_ranked(out).sort("rank")["uid"].to_list()


def test_by_length_walks_the_shortest_question_first_ties_in_input_order(copy):
    rerank(copy, RankChoice(by="length"))
    ranked = read_ranked(copy)
    assert ranked["rank"].to_list() == list(range(ranked.height))
    keys = list(zip(ranked["n_question"], ranked["row_index"], strict=True))
    assert keys == sorted(keys)  # shortest first; equal lengths keep input order
    assert ranked["n_question"].n_unique() < ranked.height  # there were ties to break
    ranking = _manifest(copy)["ranking"]
    assert ranking["by"] == "length" and ranking["ascending"] is True
    # the score columns are still the angles', only the order changed
    assert ranked["score"].to_numpy() == pytest.approx((ranked["c_intra"] + ranked["c_inter"]).to_numpy())
    # a schedule reads the new order as it is
    assert load_ranking(copy).uids.to_list() == ranked["uid"].to_list()
    assert load_ranking(copy).identity["ranking"]["by"] == "length"


def test_by_score_restores_the_angle_order_bit_for_bit(ranking, copy):
    original = read_ranked(ranking)
    rerank(copy, RankChoice(by="length"))
    assert read_ranked(copy)["uid"].to_list() != original["uid"].to_list()
    rerank(copy, RankChoice(by="n_tokens", ascending=True))
    result = ac.rank(copy, by="score")
    assert result.status == "re-ranked"
    assert read_ranked(copy).equals(original)  # every column, every row, same parts
    assert _manifest(copy)["ranking"] == _manifest(ranking)["ranking"]
    assert _manifest(ranking)["ranking"]["by"] == "score"  # a fresh score says what it is by
    # and the schedule identity of the default order is what it was before `by` existed
    assert "by" not in load_ranking(copy).identity["ranking"]


def test_calibrated_columns_are_added_atomically_and_ranked_by_in_their_directions(ranking, copy):
    before = _order(copy)
    values = _calibrated(copy)
    assert _order(copy) == before  # adding columns keeps the order
    assert _manifest(copy)["attached"] == {"p_pass": {"by": "test"}, "learnability": {"by": "test"}}
    stored = read_ranked(copy).sort("row_index")
    assert stored["p_pass"].to_list() == values["p_pass"].to_list()

    ac.rank(copy, by="p_pass")  # easiest first: highest predicted pass rate is rank 0
    ranked = read_ranked(copy)
    assert ranked["p_pass"].to_list() == sorted(ranked["p_pass"].to_list(), reverse=True)
    assert ranked["uid"][0] == "q0" and _manifest(copy)["ranking"]["ascending"] is False

    ac.rank(copy, by="learnability")  # the most expected reward variance first
    ranked = read_ranked(copy)
    assert ranked["learnability"].to_list() == sorted(ranked["learnability"].to_list(), reverse=True)
    assert abs(ranked["p_pass"][0] - 0.5) < 0.05

    ac.rank(copy, by="p_pass", ascending=True)  # hardest first, said explicitly
    assert read_ranked(copy)["uid"][0] == "q39"
    ac.rank(copy, by="learnability")  # a new --by walks its own direction again
    assert _manifest(copy)["ranking"]["ascending"] is False

    ac.rank(copy, by="score")  # the angle order, with the calibrated columns kept
    back = read_ranked(copy)
    assert back["uid"].to_list() == read_ranked(ranking)["uid"].to_list()
    assert back.drop("p_pass", "learnability").equals(read_ranked(ranking))
    assert "p_pass" in back.columns


def test_any_numeric_column_ranks_highest_first_and_the_cli_says_so(copy, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "rank", copy, "--by", "n_tokens")
    assert code == 0, err
    ranked = read_ranked(copy)
    assert ranked["n_tokens"].to_list() == sorted(ranked["n_tokens"].to_list(), reverse=True)
    assert "n_tokens, highest first" in err
    code, out, _ = run_cli(monkeypatch, capsys, "rank", copy, "--by", "n_tokens", "--ascending", "--json")
    assert code == 0 and json.loads(out)["ranking"] == "n_tokens, lowest first"
    assert read_ranked(copy)["n_tokens"].to_list() == sorted(ranked["n_tokens"].to_list())


@pytest.mark.parametrize(
    ("by", "why"),
    [
        ("difficulty", "has no column 'difficulty'"),
        ("p_pass", "has no column 'p_pass' (`anglecurate calibrate --ranking"),
        ("question", "column 'question' is not numeric (String)"),
        ("empty", "column 'empty' has no values (every row is null or NaN)"),
        ("rank", "has no column 'rank'"),
    ],
)
def test_an_unusable_column_is_one_line_listing_the_usable_ones(copy, monkeypatch, capsys, by, why):
    n = read_ranked(copy).height
    empty = pl.DataFrame({"row_index": range(n), "empty": [float("nan")] * n})
    attach_columns(copy, empty)
    before = read_ranked(copy)
    manifest = _manifest(copy)
    code, out, err = run_cli(monkeypatch, capsys, "rank", copy, "--by", by)
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line and why in line
    usable = line.split("; usable: ")[1].split(", ")
    assert usable[:2] == ["score", "score_length_controlled"] and "length" in usable
    assert {"n_tokens", "n_question"} <= set(usable)
    assert not {"empty", "question", "rank", "row_index_"} & set(usable)
    assert read_ranked(copy).equals(before) and _manifest(copy) == manifest  # nothing changed


def test_length_control_beside_another_by_is_refused(copy):
    _calibrated(copy)
    with pytest.raises(UserError, match="--length-control orders by the angle score's residual"):
        ac.rank(copy, by="p_pass", length_control=True)
    ac.rank(copy, by="p_pass")
    with pytest.raises(UserError, match="does not apply to --by p_pass"):
        ac.rank(copy, length_control=True)


def test_null_values_follow_the_nan_policy(copy):
    n = read_ranked(copy).height
    mine = [None if i % 4 == 0 else float(i) for i in range(n)]
    values = pl.DataFrame({"row_index": range(n), "mine": mine})
    attach_columns(copy, values)
    rerank(copy, RankChoice(by="mine"))
    ranked = read_ranked(copy)
    assert ranked["mine"].to_list()[-10:] == [None] * 10  # last, by default
    rerank(copy, RankChoice(by="mine", nan_policy="drop"))
    assert read_ranked(copy).height == n - 10 and _manifest(copy)["counts"]["dropped"] == 10
    rerank(copy, RankChoice(by="mine"))  # nothing was lost
    assert read_ranked(copy).height == n


def test_a_rerank_by_a_column_is_atomic(copy, monkeypatch):
    _calibrated(copy)
    before = read_ranked(copy)
    manifest = _manifest(copy)

    def dying(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.DataFrame, "write_parquet", dying)  # killed while the stage is built
    with pytest.raises(KeyboardInterrupt):
        ac.rank(copy, by="p_pass")
    monkeypatch.undo()
    assert read_ranked(copy).equals(before) and _manifest(copy) == manifest
    assert not (copy / ".anglecurate").exists()

    real_replace = os.replace

    def dying_replace(src, dst):
        if str(dst) == str(copy / "ranked"):  # after the COMMIT marker, mid-swap
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ac.rank(copy, by="p_pass")
    monkeypatch.undo()
    ranked = ac.read_ranking(copy).collect()  # any reader finishes the swap
    assert ranked["uid"][0] == "q0" and _manifest(copy)["ranking"]["by"] == "p_pass"


def test_attached_columns_cannot_overwrite_the_dataset_or_the_ranking(copy):
    n = read_ranked(copy).height
    for name in ("question", "score", "n_question"):
        with pytest.raises(UserError, match=f"'{name}' is a column of the ranking already"):
            attach_columns(copy, pl.DataFrame({"row_index": range(n), name: np.zeros(n)}))
    with pytest.raises(UserError, match="row_index repeats"):
        attach_columns(copy, pl.DataFrame({"row_index": [0, 0], "x": [1.0, 2.0]}))
    _calibrated(copy)
    _calibrated(copy)  # calibrate again: its own columns are replaced
    assert read_ranked(copy).columns.count("p_pass") == 1


def test_score_with_its_options_gives_the_angle_order_back(copy, ranking, tiny_model_dir):
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import score

    rerank(copy, RankChoice(by="length"))
    run = _manifest(ranking)["run"]
    cfg = ScoreConfig(
        model=str(tiny_model_dir),
        data=run["dataset"]["path"],
        out=str(copy),
        id_field="id",
        field="question",
        dtype="fp32",
    )
    assert score(cfg).status == "re-ranked"
    assert read_ranked(copy).equals(read_ranked(ranking))


def test_the_predictor_fitted_on_stored_features_orders_the_ranking(copy):
    """calibrate's path without rollouts: stored features, measured pass rates on a sample,
    the fit, its columns attached, the ranking walked easiest first."""
    from anglecurate.scoring.features import read_prefill_features
    from anglecurate.stats.learnability import fit_learnability

    inputs = read_prefill_features(copy)
    n = inputs.row_index.size
    assert inputs.features.shape == (n, 2 * 3 + 2) and inputs.names[-2:] == [
        "log1p n_question",
        "log1p n_tokens",
    ]
    assert inputs.row_index.tolist() == read_ranked(copy)["row_index"].to_list()  # rank order
    # shorter questions pass more often (a known truth); 4 rollouts on 30 of the 40 rows
    rng = np.random.default_rng(0)
    truth = 1 / (1 + np.exp((inputs.baselines["n_question"] - np.median(inputs.baselines["n_question"])) / 4))
    k = np.where(np.arange(n) % 4 == 0, 0, 4)
    rate = np.where(k > 0, rng.binomial(4, truth) / 4, np.nan)
    fit = fit_learnability(
        inputs.features, rate, k, inputs.baselines, folds=3, Cs=(0.1, 1.0), n_resamples=200
    )
    values = pl.DataFrame(
        {"row_index": inputs.row_index, "p_pass": fit.p_pass, "learnability": fit.learnability}
    )
    attach_columns(copy, values, {"predictor": fit.to_dict()})
    ac.rank(copy, by="p_pass")
    ranked = read_ranked(copy)
    assert ranked["p_pass"].to_list() == sorted(fit.p_pass.tolist(), reverse=True)
    assert ranked["n_question"][0] <= np.median(inputs.baselines["n_question"])  # easiest: short
    assert _manifest(copy)["attached"]["p_pass"]["predictor"]["quality"].keys() == {
        "predictor",
        "n_question",
        "score",
    }
