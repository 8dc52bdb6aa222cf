"""What a pilot cost: tokens and seconds per arm, in all, and in uniform runs."""

from __future__ import annotations

import polars as pl
import pytest

from anglecurate.piloting.cost import pilot_cost, run_costs


def _rows(arm, seed, tokens, eval_tokens, seconds, eval_seconds):
    """A run's curve: step 0 (an evaluation only) then step 10 with the totals given."""
    return [
        {"arm": arm, "seed": seed, "step": 0, "tokens": 0, "eval_tokens": eval_tokens // 2,
         "seconds": 0.0, "eval_seconds": eval_seconds / 2, "accuracy": 0.1},
        {"arm": arm, "seed": seed, "step": 10, "tokens": tokens, "eval_tokens": eval_tokens,
         "seconds": seconds, "eval_seconds": eval_seconds, "accuracy": 0.2},
    ]  # fmt: skip


def test_the_cost_sums_each_runs_last_row_per_arm_and_counts_uniform_runs():
    rows = (
        _rows("uniform", 0, 1000, 200, 90.0, 10.0)
        + _rows("uniform", 1, 1400, 200, 110.0, 10.0)
        + _rows("gainrl", 0, 600, 200, 140.0, 10.0)
    )
    cost = pilot_cost(pl.DataFrame(rows[::-1]))  # any row order
    assert cost["runs"] == 3
    assert cost["train_tokens"] == 3000 and cost["eval_tokens"] == 600 and cost["generated_tokens"] == 3600
    assert cost["train_seconds"] == 340.0 and cost["wall_seconds"] == 370.0
    assert cost["uniform_run"]["generated_tokens"] == 1400 and cost["uniform_run"]["wall_seconds"] == 110.0
    assert cost["in_uniform_runs"] == {
        "generated_tokens": pytest.approx(3600 / 1400, abs=0.01),
        "wall_seconds": pytest.approx(370 / 110, abs=0.01),
    }
    gainrl = cost["arms"]["gainrl"]
    assert gainrl["runs"] == 1 and gainrl["generated_tokens"] == 800 and gainrl["wall_seconds"] == 150.0
    assert gainrl["in_uniform_runs"]["wall_seconds"] == pytest.approx(150 / 110, abs=0.01)
    assert cost["arms"]["uniform"]["in_uniform_runs"]["wall_seconds"] == 2.0
    assert cost["summary"] == (
        "cost: 3 runs generated 3,600 tokens (600 of them in held-out evaluations) in 6 min of training "
        "and evaluation; in uniform runs of this budget: 3.4 in time, 2.6 in tokens"
    )


def test_without_a_uniform_run_there_is_no_multiple_and_old_curves_count_zero():
    frame = pl.DataFrame(_rows("length", 0, 500, 100, 30.0, 4.0)).with_columns(
        pl.lit(None, pl.Float64).alias("eval_seconds")  # a curve from before eval_seconds was kept
    )
    assert run_costs(frame)["wall_seconds"].to_list() == [30.0]
    cost = pilot_cost(frame)
    assert cost["uniform_run"] is None and cost["in_uniform_runs"] is None
    assert cost["arms"]["length"]["in_uniform_runs"] is None
    assert cost["summary"].endswith("in 30 s of training and evaluation")


def test_a_measured_arms_calibration_is_paid_once_per_arm_and_in_full_by_each_run():
    """Two seeds of `calibrated` share one calibration of 500 tokens and 40 s: the pilot
    counts it once, each run's own cost carries all of it."""
    order = {"order_tokens": 500, "order_seconds": 40.0}
    rows = _rows("uniform", 0, 1000, 200, 90.0, 10.0)
    rows += [r | order for r in _rows("calibrated", 0, 800, 200, 80.0, 10.0)]
    rows += [r | order for r in _rows("calibrated", 1, 900, 200, 85.0, 10.0)]
    rows = [{"order_tokens": 0, "order_seconds": 0.0} | r for r in rows]
    runs = run_costs(pl.DataFrame(rows))
    assert runs.filter(pl.col("arm") == "calibrated")["generated_tokens"].to_list() == [1500, 1600]
    cost = pilot_cost(pl.DataFrame(rows))
    assert cost["order_tokens"] == 500 and cost["order_seconds"] == 40.0
    assert cost["generated_tokens"] == 1200 + 1000 + 1100 + 500  # the calibration once
    assert cost["wall_seconds"] == 100.0 + 90.0 + 95.0 + 40.0
    calibrated = cost["arms"]["calibrated"]
    assert calibrated["generated_tokens"] == 2100 + 500 and calibrated["order_tokens"] == 500
