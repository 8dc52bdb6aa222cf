"""`anglecurate calibrate` end to end on the tiny model: a stratified sample, k rollouts per
prompt in the rendering the rows were scored in, rewarded by a deterministic reward, the fit,
p_pass and learnability on every ranked row, `rank --by p_pass` afterwards, the cost said
before and recorded after, a resume after a kill, and reruns with the same and other settings."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

import anglecurate as ac
from anglecurate.calibration.rollouts import STORE, RolloutStore
from anglecurate.generation.engine import pick_engine
from anglecurate.generation.graded import grade
from anglecurate.generation.request import GenerationRequest
from anglecurate.rewards.registry import resolve_reward
from anglecurate.scoring.spec import RunSpec
from anglecurate.scoring.store import OutputDir

from ..helpers import read_ranked, run_cli
from .conftest import FAST, FAST_CLI, REWARD


def _json(out) -> dict:
    return json.loads((out / "calibrate.json").read_text())


def test_rollouts_are_the_scored_prompts_sampled_over_the_whole_order(calibrated):
    out, result, _ = calibrated
    rollouts = pl.read_parquet(out / "calibrate.parquet")
    assert rollouts.equals(result.rollouts) and rollouts.height == 12
    # one row from each of 12 equal strata of the 40 ranks: every part of the order
    bounds = (np.arange(13) * 40) // 12
    strata = np.searchsorted(bounds, rollouts["rank"].to_numpy(), side="right") - 1
    assert strata.tolist() == list(range(12))
    ranked = read_ranked(OutputDir(out).root).sort("row_index")
    n_tokens = dict(zip(ranked["row_index"].to_list(), ranked["n_tokens"].to_list(), strict=True))
    # the prompt generated from is the one scored: the R1 system prompt, the worked example
    # and the question under the chat template, token for token (a bare user turn is ~100 fewer)
    assert rollouts["prompt_tokens"].to_list() == [n_tokens[r] for r in rollouts["row_index"]]
    for row in rollouts.iter_rows(named=True):
        assert row["k"] == 4 and len(row["completions"]) == 4 and len(row["rewards"]) == 4
        assert row["pass_rate"] == pytest.approx(np.mean(row["rewards"]))
        assert row["has_variance"] == (len(set(row["raw_rewards"])) > 1)
        assert all(1 <= t <= 4 for t in row["completion_tokens"])
    assert 0 < rollouts["pass_rate"].mean() < 1  # the reward told completions apart


def test_completions_match_the_generation_floor_on_the_scored_rendering(calibrated, ranking):
    """Recomputed by hand for two sampled rows: the scored conversation rendered by the spec,
    a request keyed by the row index, the HF engine, the reward."""
    out, result, _ = calibrated
    manifest = OutputDir(out).read_manifest()
    spec = RunSpec.from_run(manifest["run"], out)
    rows = result.rollouts.head(2)
    questions = read_ranked(out).filter(pl.col("row_index").is_in(rows["row_index"].to_list()))
    by_row = dict(zip(questions["row_index"].to_list(), questions["question"].to_list(), strict=True))
    rendered = [spec.render(by_row[r]) for r in rows["row_index"]]
    assert rendered[0][0][0]["role"] == "system" and len(rendered[0][0]) == 4  # system, shot, question
    request = GenerationRequest(
        prompts=tuple(m for m, _ in rendered),
        texts=tuple(r.text for _, r in rendered),
        chat=True,
        max_new_tokens=4,
        k=4,
        temperature=1.0,
        seed=0,
        streams=tuple(rows["row_index"].to_list()),
    )
    model = spec.load_on("cpu", "auto", causal_lm=True).base
    generated = pick_engine(model, spec.tokenizer, engine="hf").generate(request)
    graded = grade(generated, resolve_reward(REWARD), rows["answer"].to_list())
    assert generated.completions == rows["completions"].to_list()
    assert graded.pass_rate == rows["pass_rate"].to_list()


def test_every_ranked_row_gets_p_pass_and_the_order_is_kept(calibrated, ranking):
    out, result, _ = calibrated
    lazy = ac.read_ranking(out)
    ranked = lazy.collect()
    assert ranked["uid"].to_list() == read_ranked(ranking)["uid"].to_list()  # not reordered
    assert ranked["p_pass"].null_count() == 0 and ranked.height == 40
    p = ranked["p_pass"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert ranked["learnability"].to_numpy() == pytest.approx(p * (1 - p))
    sampled = ranked.join(
        result.rollouts.select("row_index", pl.col("p_pass").alias("stored")), on="row_index"
    )
    assert sampled["p_pass"].to_list() == pytest.approx(sampled["stored"].to_list())
    by_row = dict(zip(result.row_index.tolist(), result.fit.p_pass.tolist(), strict=True))
    assert [by_row[r] for r in ranked["row_index"]] == pytest.approx(p.tolist())
    assert OutputDir(out).read_manifest()["attached"]["p_pass"]["by"] == "anglecurate calibrate"


def test_calibrate_json_records_settings_sample_cost_and_the_fit(calibrated):
    out, result, lines = calibrated
    summary = _json(out)
    assert summary == json.loads(json.dumps(result.summary, default=str))
    assert summary["options"]["samples_per_prompt"] == 4 and summary["rollout_settings"]["reward"] == REWARD
    assert summary["sample"] == {
        "asked": 12,
        "n": 12,
        "of": 40,
        "seed": 0,
        "over": {"by": "score", "ascending": False},
    }
    rollouts = result.rollouts
    tokens = int(rollouts["completion_tokens"].list.sum().sum())
    planned, recorded = summary["cost"]["planned"], summary["cost"]["recorded"]
    assert planned["completions"] == 48 and planned["max_generated_tokens"] == 48 * 4
    assert planned["prompt_tokens"] == int(rollouts["prompt_tokens"].sum())
    assert recorded["generated_tokens"] == tokens == recorded["this_run"]["generated_tokens"]
    assert recorded["completions"] == 48 and recorded["this_run"]["prompts"] == 12
    assert recorded["generation_seconds"] > 0 and recorded["this_run"]["wall_seconds"] > 0
    assert summary["measured"]["zero_variance_groups"] == int((~rollouts["has_variance"]).sum())
    fit = summary["fit"]
    assert set(fit["quality"]) == {"predictor", "n_question", "score"}
    assert len(fit["quality"]["predictor"]["spearman_ci"]) == 2
    assert isinstance(fit["recommended"], bool) and (fit["reason"] is None) == fit["recommended"]
    # the cost was said before anything was generated, and it is the bound recorded
    assert lines == [
        "calibrate: 12 prompts x 4 completions = 48 completions, at most 192 generated tokens "
        f"(4 each), over {planned['prompt_tokens']:,} prompt tokens read 4 times each"
    ]


def test_rank_by_p_pass_walks_easiest_first(calibrated, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(calibrated[0], out)
    code, _, err = run_cli(monkeypatch, capsys, "rank", out, "--by", "p_pass")
    assert code == 0, err
    ranked = read_ranked(out)
    assert ranked["p_pass"].to_list() == sorted(ranked["p_pass"].to_list(), reverse=True)
    assert "p_pass, highest first" in err


def test_the_cli_says_the_cost_first_and_how_to_rank_last(copy, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", copy, *FAST_CLI)
    assert code == 0, err and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("calibrate: 12 prompts x 4 completions = 48 completions, at most 192")
    assert lines[-1] == (
        f"next: anglecurate rank {copy} --by p_pass (easiest first), or --by learnability "
        "(most reward variance first)"
    )
    verdict = [line for line in lines if line.startswith("the predictor is")]
    summary = _json(copy)
    assert len(verdict) == 1 and ("not recommended" in verdict[0]) == (not summary["fit"]["recommended"])
    assert any(line.startswith("generated ") for line in lines)
    code, out, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", copy, *FAST_CLI, "--json")
    assert code == 0 and json.loads(out)["cost"]["recorded"]["this_run"]["prompts"] == 0  # resumed: all done


def _killed_after(n: int, written: list):
    """A RolloutStore.write that raises KeyboardInterrupt (a kill) once ``n`` prompt files are
    written; ``written`` collects their row indices."""
    real = RolloutStore.write

    def write(store, record):
        if len(written) == n:
            raise KeyboardInterrupt
        written.append(record["row_index"])
        real(store, record)

    return write


def test_a_killed_run_resumes_per_prompt_and_draws_what_the_whole_run_drew(
    copy, calibrated, monkeypatch, capsys
):
    written: list[int] = []
    monkeypatch.setattr(RolloutStore, "write", _killed_after(5, written))
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", "--ranking", copy, *FAST_CLI, "-q")
    assert code == 130 and "finished prompts are kept" in err
    monkeypatch.undo()
    files = sorted(p.stem for p in (copy / STORE / "prompts").glob("*.json"))
    assert sorted(map(str, written)) == files and len(files) == 5
    assert not (copy / "calibrate.json").exists() and "p_pass" not in read_ranked(copy).columns

    lines: list[str] = []
    result = ac.calibrate(copy, log=lines.append, **FAST)
    assert lines[-1].endswith("; 5 prompts done already, 7 to generate")
    this_run = result.summary["cost"]["recorded"]["this_run"]
    assert this_run["prompts"] == 7  # the finished five were not generated again
    whole = calibrated[1].rollouts
    same = ["row_index", "completions", "rewards", "pass_rate", "has_variance", "completion_tokens"]
    assert result.rollouts.select(same).equals(whole.select(same))
    assert result.summary["cost"]["recorded"]["generated_tokens"] == int(
        whole["completion_tokens"].list.sum().sum()
    )


def test_a_rerun_with_the_same_settings_generates_nothing(copy, monkeypatch):
    first = ac.calibrate(copy, **FAST)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(RunSpec, "load_on", no_model)
    again = ac.calibrate(
        copy, **{**FAST, "engine": "hf", "bootstrap": 50}
    )  # not rollout settings: it resumes
    assert again.summary["cost"]["recorded"]["this_run"]["prompts"] == 0
    same = ["row_index", "completions", "pass_rate"]
    assert again.rollouts.select(same).equals(first.rollouts.select(same))
    assert again.summary["fit"]["bootstrap"] == 50  # the fit is redone with its own options


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(copy, monkeypatch, capsys):
    ac.calibrate(copy, **FAST)
    before = (copy / "calibrate.json").read_text()
    ranked = read_ranked(copy)
    cli = ["calibrate", "--ranking", copy, *FAST_CLI, "--seed", "1", "--samples-per-prompt", "3"]
    code, _, err = run_cli(monkeypatch, capsys, *cli)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds a calibration with other settings (--samples-per-prompt, --seed)" in err
    assert "--overwrite" in err
    assert (copy / "calibrate.json").read_text() == before and read_ranked(copy).equals(ranked)
    code, _, err = run_cli(monkeypatch, capsys, *cli, "--overwrite", "-q")
    assert code == 0, err
    summary = _json(copy)
    assert summary["rollout_settings"]["seed"] == 1 and summary["options"]["samples_per_prompt"] == 3
    assert len(list((copy / STORE / "prompts").glob("*.json"))) == 12
    assert pl.read_parquet(copy / "calibrate.parquet")["k"].unique().to_list() == [3]


def test_a_callers_own_rows_and_model(copy, calibrated):
    """The pilot's way in: every row it names, generated by the model it already holds."""
    from anglecurate.calibration.run import calibrate
    from anglecurate.calibration.settings import CalibrateConfig

    out = OutputDir(copy)
    spec = RunSpec.from_run(out.read_manifest()["run"], copy)
    model = spec.load_on("cpu", "fp32", causal_lm=True).base
    rows = calibrated[1].rollouts["row_index"].to_list()[:10]
    options = {k: v for k, v in FAST.items() if k != "sample"}
    result = calibrate(CalibrateConfig(ranking=str(copy), **options), model=model, spec=spec, rows=rows)
    assert sorted(result.pass_rates["row_index"].to_list()) == sorted(rows)
    assert result.summary["sample"]["asked"] is None and result.summary["rollout_settings"]["rows"] == sorted(
        rows
    )
    whole = calibrated[1].rollouts.filter(pl.col("row_index").is_in(rows)).sort("row_index")
    assert result.rollouts.sort("row_index")["completions"].equals(whole["completions"])
    assert result.fit.p_pass.shape == (40,)


def test_the_report_opens_with_the_calibration(calibrated, tmp_path):
    out, result, _ = calibrated
    report = ac.report(out, out=tmp_path / "report")
    assert report.figures[0].name == "calibration.png" and report.figures[0].stat().st_size > 10_000
    page = report.html.read_text()
    section = page.index('<section id="calibration">')
    assert section < page.index('id="sec-score_distribution"')  # before every other figure
    body = page[section : page.index("</section>", section)]
    assert 'id="calibration"' in body and "held-out Spearman [95%]" in body
    fit = result.summary["fit"]["quality"]["predictor"]
    assert f"{fit['spearman']:.2f} [{fit['spearman_ci'][0]:.2f}, {fit['spearman_ci'][1]:.2f}]" in body
    assert ("is not recommended" in body) == (not result.recommended)
    assert "angle score alone" in body and "n_question alone" in body


def test_a_report_without_calibration_has_no_section(ranking, tmp_path):
    page = ac.report(ranking, out=tmp_path / "report").html.read_text()
    assert 'id="calibration"' not in page
