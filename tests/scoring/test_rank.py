"""Ranking choices: `anglecurate rank` (re-rank without the model, atomically), length
control, NaN policies, and the authors' metric (`score --metric gainrl-reference`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.rerank import rerank
from anglecurate.scoring.store import OutputDir
from anglecurate.stats.isotonic import isotonic_residuals

from ..helpers import KILLED_IN_RANKING, batch1_mlp_inputs, read_ranked, run_cli
from .test_gainrl_reference import naive


def _cfg(model, data, out, **kw) -> ScoreConfig:
    return ScoreConfig(model=str(model), data=str(data), out=str(out), dtype="fp32", field="problem", **kw)


@pytest.fixture(scope="module")
def scored(tiny_model_dir, math_json, tmp_path_factory):
    """A default run (last layer, 1 x c_intra + 1 x c_inter), re-ranked by each test's copy."""
    out = tmp_path_factory.mktemp("scored") / "out"
    score(_cfg(tiny_model_dir, math_json, out, shard_rows=15, chunk_rows=16))
    return out


@pytest.fixture
def copy(scored, tmp_path):
    import shutil

    target = tmp_path / "out"
    shutil.copytree(scored, target)
    return target


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_rank_reproduces_score_for_the_same_choice(tiny_model_dir, math_json, copy, tmp_path):
    direct = tmp_path / "direct"
    score(_cfg(tiny_model_dir, math_json, direct, rank_layer=0, w_inter=8.0, shard_rows=15, chunk_rows=16))
    result = rerank(copy, RankChoice(layer=0, w_inter=8.0))
    assert result.status == "re-ranked"
    a, b = read_ranked(direct), read_ranked(copy)
    assert a.equals(b)  # every column of every row, in the same order and parts
    assert sorted(p.name for p in (copy / "ranked").iterdir()) == [
        "part-00000.parquet",
        *[f"part-0000{i}.parquet" for i in (1, 2)],
    ]
    assert _manifest(copy)["ranking"] == _manifest(direct)["ranking"]
    assert _manifest(copy)["outputs"]["ranked"] == _manifest(direct)["outputs"]["ranked"]
    assert not (copy / ".anglecurate").exists()
    # and back: the default choice again gives the original ranking
    rerank(copy, RankChoice())
    assert a.columns == read_ranked(copy).columns
    assert read_ranked(copy)["uid"].to_list() != a["uid"].to_list()


def test_score_with_other_ranking_options_reranks_a_finished_run(tiny_model_dir, math_json, copy):
    before = read_ranked(copy)
    result = score(_cfg(tiny_model_dir, math_json, copy, rank_layer=1, shard_rows=15, chunk_rows=16))
    assert result.status == "re-ranked"
    after = read_ranked(copy)
    assert after["score"].to_numpy() == pytest.approx(
        np.array([a + b for a, b in zip(after["c_intra"], after["c_inter"], strict=True)])
    )
    layer1 = after.select(pl.col("c_intra_layers").list.get(1).cast(pl.Float64))["c_intra_layers"]
    assert (after["c_intra"] - layer1).abs().max() == 0
    assert sorted(after["uid"]) == sorted(before["uid"])


def test_length_control_ranks_by_the_residual(copy):
    rerank(copy, RankChoice(length_control=True))
    ranked = read_ranked(copy)
    assert _manifest(copy)["ranking"]["length_control"] is True
    residual = ranked["score_length_controlled"].to_numpy()
    assert list(residual) == sorted(residual, reverse=True)
    expected, fit = isotonic_residuals(ranked["score"].to_numpy(), ranked["n_question"].to_numpy())
    assert residual == pytest.approx(expected, abs=1e-12)
    assert _manifest(copy)["ranking"]["length_fit"]["direction"] == fit["direction"]
    from scipy.stats import spearmanr

    raw_rho = spearmanr(ranked["score"], ranked["n_question"]).statistic
    lc_rho = spearmanr(residual, ranked["n_question"]).statistic
    assert abs(lc_rho) < abs(raw_rho)


def test_rank_is_atomic_when_killed_mid_swap(copy, monkeypatch):
    """Killed after the COMMIT marker, between the renames: the next reader completes the
    swap. Killed before it: the old ranking is untouched and the stage is dropped."""
    old = read_ranked(copy)
    real_replace = os.replace

    def dying_replace(src, dst):
        if str(dst) == str(copy / "ranked"):  # the new parts moving in; the old ones moved out
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        rerank(copy, RankChoice(layer=0))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (copy / "ranked").exists()  # mid-swap: the old parts are in the stage
    manifest, parts = OutputDir(copy).ranked_parts()  # any reader recovers
    assert manifest["ranking"]["layer"] == 0 and parts and not (copy / ".anglecurate").exists()
    assert read_ranked(copy)["score"].to_list() != old["score"].to_list()

    def dying_build(*args, **kwargs):
        raise KeyboardInterrupt

    before = read_ranked(copy)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", dying_build)
    with pytest.raises(KeyboardInterrupt):
        rerank(copy, RankChoice(layer=2))
    monkeypatch.undo()
    assert read_ranked(copy).equals(before) and _manifest(copy)["ranking"]["layer"] == 0
    OutputDir(copy).read_manifest()
    assert not (copy / ".anglecurate").exists()


def test_rank_killed_with_sigkill_is_finished_by_a_plain_rerun(scored, copy, tmp_path, monkeypatch, capsys):
    args = ["rank", str(copy), "--layer", "0", "--w-inter", "8"]
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_RANKING, *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (copy / ".anglecurate" / "ranking.lock").exists(), "the kill left the ranking lock behind"
    assert _manifest(copy)["ranking"]["layer"] != 0  # the old ranking is intact

    code, _, err = run_cli(monkeypatch, capsys, *args)  # the same command again
    assert code == 0, err
    assert "took over the ranking lock" in err and "is being ranked" not in err
    unkilled = tmp_path / "unkilled"
    shutil.copytree(scored, unkilled)
    rerank(unkilled, RankChoice(layer=0, w_inter=8.0))
    assert read_ranked(copy).equals(read_ranked(unkilled))
    assert _manifest(copy)["ranking"] == _manifest(unkilled)["ranking"]
    assert not (copy / ".anglecurate").exists()


def test_a_live_ranking_lock_refuses_a_second_ranker_in_one_line(copy):
    from anglecurate.scoring.store import MergeInProgress

    hold = "import sys, time\nfrom anglecurate.scoring.store import OutputDir\n"
    hold += "with OutputDir(sys.argv[1]).ranking_lock():\n    print('held', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", hold, str(copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with (
            pytest.raises(MergeInProgress, match=f"is being ranked by pid {proc.pid}") as info,
            OutputDir(copy).ranking_lock(),
        ):
            pass
        assert "\n" not in str(info.value)
    finally:
        proc.terminate()
        proc.wait()
    with OutputDir(copy).ranking_lock():  # terminated: its lock is gone or taken over
        pass


@pytest.mark.parametrize("packing", ["off", "on"])
def test_gainrl_reference_matches_the_authors_formula(tiny_model_dir, math_json, tmp_path, capsys, packing):
    cfg = _cfg(
        tiny_model_dir,
        math_json,
        tmp_path / "ref",
        metric="gainrl-reference",
        max_batch_tokens=4096,
        packing=packing,
    )
    score(cfg)
    ranked = read_ranked(tmp_path / "ref")
    got = dict(zip(ranked["uid"], ranked["gainrl_reference"], strict=True))
    nans = 0
    for uid, seg, kept, layers in batch1_mlp_inputs(cfg, 40):
        want = naive(kept[max(layers)], seg.n_prefix, seg.n_suffix)
        nans += math.isnan(want)
        assert got[uid] == pytest.approx(want, abs=1e-5, nan_ok=True)
    assert 0 < nans < 40  # the R1 prefix is longer than most questions: NaN on most
    manifest = _manifest(tmp_path / "ref")
    assert manifest["counts"]["undefined_score"] == nans == manifest["ranking"]["undefined_score"]
    assert "warning: the score is NaN for" in capsys.readouterr().err
    assert ranked["score"].to_list()[: 40 - nans] == sorted(
        ranked["score"].to_list()[: 40 - nans], reverse=True
    )
    assert ranked["score"].is_nan().to_list() == [False] * (40 - nans) + [True] * nans

    # P and S fixed by hand (the authors' 110 and 6 for their template)
    fixed = _cfg(
        tiny_model_dir, math_json, tmp_path / "fixed", metric="gainrl-reference", ref_prefix=5, ref_suffix=2
    )
    score(fixed)
    ranked = read_ranked(tmp_path / "fixed")
    got = dict(zip(ranked["uid"], ranked["gainrl_reference"], strict=True))
    for uid, _seg, kept, layers in batch1_mlp_inputs(fixed, 5):
        assert got[uid] == pytest.approx(naive(kept[max(layers)], 5, 2), abs=1e-5)


def test_nan_policies(tiny_model_dir, math_json, tmp_path):
    out = tmp_path / "ref"
    score(_cfg(tiny_model_dir, math_json, out, metric="gainrl-reference", nan_policy="first"))
    first = read_ranked(out)
    n_nan = int(first["score"].is_nan().sum())
    head = first.head(n_nan)
    assert head["score"].is_nan().all() and head["row_index"].to_list() == sorted(head["row_index"])

    rerank(out, RankChoice(metric="gainrl-reference", nan_policy="drop"))
    kept, dropped = read_ranked(out), pl.read_parquet(out / "undefined.parquet")
    assert kept.height == 40 - n_nan and dropped.height == n_nan and dropped["score"].is_nan().all()
    assert kept["rank"].to_list() == list(range(kept.height)) and dropped["rank"].null_count() == n_nan
    manifest = _manifest(out)
    assert manifest["counts"]["dropped"] == n_nan and manifest["outputs"]["undefined"] == "undefined.parquet"

    rerank(out, RankChoice(metric="gainrl-reference", nan_policy="last"))  # nothing was lost
    back = read_ranked(out)
    assert back.height == 40 and not (out / "undefined.parquet").exists()
    assert back.drop("rank").sort("uid").equals(first.drop("rank").sort("uid"))

    rerank(out, RankChoice(metric="angles"))  # the stored layers are still there
    assert read_ranked(out)["score"].is_nan().sum() == 0


def test_rank_cli_and_errors(copy, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "rank", copy, "--layer", "0", "--w-inter", "8")
    assert code == 0 and "layer 0, 1 x c_intra + 8 x c_inter" in err
    assert _manifest(copy)["ranking"].items() >= {"layer": 0, "w_intra": 1.0, "w_inter": 8.0}.items()
    code, _, err = run_cli(monkeypatch, capsys, "rank", copy, "--w-intra", "0")  # keeps layer 0
    assert code == 0 and _manifest(copy)["ranking"]["layer"] == 0
    cases = [
        (["rank", tmp_path / "nothing"], "nothing does not exist; pass the --out folder of a finished"),
        (["rank", copy, "--layer", "7"], "layer 7 does not exist"),
        (["rank", copy, "--w-inter", "0"], "both 0"),
        (["rank", copy, "--metric", "gainrl-reference"], "scored without the authors' value"),
        (["rank", copy, "--from-validate"], "run `anglecurate validate"),
    ]
    for args, message in cases:
        code, _, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    (copy / "validate.json").write_text(json.dumps({"recommendation": None, "why": "nothing held"}))
    code, _, err = run_cli(monkeypatch, capsys, "rank", copy, "--from-validate")
    assert code == 2 and "nothing held" in err
    rec = {"metric": "angles", "layer": 1, "w_intra": 0.0, "w_inter": -1.0}
    (copy / "validate.json").write_text(json.dumps({"recommendation": rec, "why": "held"}))
    code, _, err = run_cli(monkeypatch, capsys, "rank", copy, "--from-validate")
    assert code == 0 and _manifest(copy)["ranking"].items() >= rec.items()
    ranked = read_ranked(copy)
    assert (ranked["score"] + ranked["c_inter"]).abs().max() < 1e-12  # ascending c_inter at layer 1
    code, _, _ = run_cli(monkeypatch, capsys, "rank", copy, "--length-control")
    code, out, _ = run_cli(monkeypatch, capsys, "show", copy, "-n", "2")
    assert code == 0 and "score_lc" in out and "length-controlled" in out
