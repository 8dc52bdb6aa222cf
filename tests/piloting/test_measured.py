"""The arms whose order is measured by rollouts (``calibrated``, ``pass-rate``), and the
per-step share of GRPO groups without reward variance, end to end on the tiny model: the
calibrations land in the pilot folder (the ranking stays as scored), the arms walk their
measured pass rates easiest first, their runs are charged the rollouts, and the zero-variance
share equals TRL's own ``frac_reward_zero_std`` step by step."""

from __future__ import annotations

import json

import polars as pl
import pytest

pytest.importorskip("trl")

import anglecurate as ac  # noqa: E402
from anglecurate.piloting import measured  # noqa: E402
from anglecurate.piloting import train as pilot_train  # noqa: E402
from anglecurate.piloting.arms import easiest_first  # noqa: E402

from ..helpers import run_cli  # noqa: E402
from .test_pilot import REWARD_MODULE, pilot_args  # noqa: E402


def test_easiest_first_sorts_by_pass_rate_with_ties_in_training_order():
    rates = {"a": 0.0, "b": 0.5, "c": 1.0, "d": 0.5}
    assert easiest_first(["a", "b", "c", "d", "e"], rates) == ["c", "b", "d", "a"]  # e: not ranked


@pytest.fixture
def trl_logs(monkeypatch):
    """Every log dict TRL's trainer emits (its metrics, averaged over the logging steps)."""
    logs = []
    build = pilot_train._callback

    def with_logs(recorder, eval_every, max_steps):
        callback = build(recorder, eval_every, max_steps)
        callback.on_log = lambda args, state, control, logs_=None, **kw: logs.append(
            (recorder.arm, state.global_step, dict(kw.get("logs") or logs_ or {}))
        )
        return callback

    monkeypatch.setattr(pilot_train, "_callback", with_logs)
    return logs


def test_measured_arms_calibrate_walk_easiest_first_and_pay_for_it(
    monkeypatch, capsys, tiny_model_dir, data, tmp_path, trl_logs
):
    out = tmp_path / "p"
    walked = {}
    measure = measured.measure_order

    def keep(arm, *args, **kwargs):
        walked[arm] = order = measure(arm, *args, **kwargs)
        return order

    monkeypatch.setattr(measured, "measure_order", keep)
    (tmp_path / "hand_reward.py").write_text(REWARD_MODULE)  # tells completions apart: groups vary
    monkeypatch.syspath_prepend(str(tmp_path))
    args = pilot_args(tiny_model_dir, data, out, "--arms", "uniform,calibrated,pass-rate")
    args += ["--calibrate-sample", "10", "--reward", "hand_reward:odd_length", "--json"]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    summary = json.loads(stdout)
    train = pl.read_parquet(out / "data" / "train.parquet")  # 20 rows: 24 less 4 held out

    calibrated = json.loads((out / "calibration" / "calibrated" / "calibrate.json").read_text())
    pass_rate = json.loads((out / "calibration" / "pass-rate" / "calibrate.json").read_text())
    assert calibrated["measured"]["rows"] == 10 and pass_rate["measured"]["rows"] == train.height
    for info in (calibrated, pass_rate):
        settings = info["rollout_settings"]
        assert settings["samples_per_prompt"] == 2 and settings["max_new_tokens"] == 3  # the training's
        assert settings["reward"] == "hand_reward:odd_length" and settings["seed"] == 0
    assert not (out / "ranking" / "calibrate.json").exists()  # the ranking itself is left as scored
    # pass-rate reuses the 10 prompts calibrated rolled out (the same draws), and still pays for them
    assert pass_rate["cost"]["recorded"]["this_run"]["prompts"] == train.height - 10
    assert pass_rate["cost"]["recorded"]["completions"] == 2 * train.height

    # the orders: pass rates easiest first, measured on every training row, or predicted
    rolled = pl.read_parquet(out / "calibration" / "pass-rate" / "calibrate.parquet")
    rate = dict(zip(rolled["uid"].cast(pl.String), rolled["pass_rate"], strict=True))
    assert len(set(rate.values())) > 1  # an order, not a tie
    assert walked["pass-rate"].uids == easiest_first(train["uid"].to_list(), rate)
    assert len(walked["calibrated"].uids) == train.height  # a prediction for every row
    ranked = ac.read_ranking(out / "calibration" / "calibrated").collect()
    p_pass = dict(zip(ranked["uid"].cast(pl.String), ranked["p_pass"], strict=True))
    assert walked["calibrated"].uids == easiest_first(train["uid"].to_list(), p_pass)

    # each run is charged its arm's rollouts; the pilot pays each calibration once
    curves = pl.read_parquet(out / "pilot.parquet")
    last = curves.sort("step").group_by("arm", maintain_order=True).last()
    charged = dict(zip(last["arm"], last["order_tokens"], strict=True))
    assert charged["uniform"] == 0
    assert charged["calibrated"] == calibrated["cost"]["recorded"]["generated_tokens"] > 0
    assert charged["pass-rate"] == pass_rate["cost"]["recorded"]["generated_tokens"] > charged["calibrated"]
    cost = summary["cost"]
    assert cost["order_tokens"] == charged["calibrated"] + charged["pass-rate"]
    runs = last["tokens"].sum() + last["eval_tokens"].sum()
    assert cost["generated_tokens"] == runs + cost["order_tokens"]
    entry = summary["arms"]["calibrated"]
    assert entry["tokens"] == pytest.approx(
        last.filter(pl.col("arm") == "calibrated")["tokens"][0] + charged["calibrated"]
    )

    # zero reward variance per step: ours, and TRL's own log of it
    steps = pl.read_parquet(out / "pilot_steps.parquet")
    assert steps.height == 3 * 2 and set(steps["groups"]) == {2}  # 2 prompts a step: 2 groups
    logged = {
        (arm, step): logs["frac_reward_zero_std"]
        for arm, step, logs in trl_logs
        if "frac_reward_zero_std" in logs
    }
    assert len(logged) == steps.height  # --eval-every 1: TRL logs every step
    assert 0 < steps["zero_variance"].mean() < 1  # some groups vary, some do not: the check can fail
    for row in steps.iter_rows(named=True):
        assert row["zero_variance"] == pytest.approx(logged[(row["arm"], row["step"])])
    after = curves.filter(pl.col("step") > 0)
    assert (
        after["zero_variance"].null_count() == 0
        and curves.filter(pl.col("step") == 0)["zero_variance"].null_count() == 3
    )
    assert summary["arms"]["uniform"]["zero_variance"] == pytest.approx(
        steps.filter(pl.col("arm") == "uniform")["zero_variance"].mean()
    )

    # a rerun redoes nothing: every run is finished, so no calibration is even read again
    kept = {arm: (out / "calibration" / arm / "calibrate.json").read_bytes() for arm in measured.MEASURED}
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    for arm in measured.MEASURED:
        assert (out / "calibration" / arm / "calibrate.json").read_bytes() == kept[arm]
    assert pl.read_parquet(out / "pilot.parquet").equals(curves)
    assert json.loads(stdout)["cost"] == cost


def test_a_ranking_without_answers_is_refused_before_any_run(
    monkeypatch, capsys, tiny_model_dir, data, tmp_path
):
    """A measured arm's rollouts are graded against the ranking's answer column: a ranking
    scored from the questions alone is refused at the start, in one line, not after the
    cheap arms have trained."""
    questions = tmp_path / "questions.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    questions.write_text("".join(json.dumps({"id": r["id"], "problem": r["problem"]}) + "\n" for r in rows))
    ranking = tmp_path / "ranked"
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", str(tiny_model_dir), "--data", str(questions),
        "--field", "problem", "--id-field", "id", "--prompt-config", "none", "--dtype", "fp32",
        "--out", str(ranking), "-q",
    )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "p"
    args = pilot_args(tiny_model_dir, data, out, "--arms", "uniform,calibrated", "--ranking", str(ranking))
    code, _, err = run_cli(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "answer" in lines[0] and str(ranking) in lines[0]
    assert not out.exists()
