"""The pilot's verdict: steps to the target, speedups, and intervals that never claim more
than the seeds show."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from anglecurate.piloting.summary import auc, first_crossing, mean_curve, summarize


def curves(
    arm: str, seeds: dict[int, list[float]], every: int = 10, tokens_per_step: int = 100
) -> list[dict]:
    rows = []
    for seed, accs in seeds.items():
        for i, acc in enumerate(accs):
            step = i * every
            rows.append(
                {"arm": arm, "seed": seed, "step": step, "tokens": step * tokens_per_step, "accuracy": acc}
            )
    return rows


def test_first_crossing_interpolates_between_evaluations():
    x, y = np.array([0.0, 10, 20]), np.array([0.1, 0.3, 0.5])
    assert first_crossing(x, y, 0.4) == pytest.approx(15.0)
    assert first_crossing(x, y, 0.1) == 0.0
    assert first_crossing(x, y, 0.6) is None
    assert auc(x, y) == pytest.approx(0.3)


def test_mean_curve_interpolates_every_seed_and_holds_its_final_value():
    x, y = mean_curve(
        [(np.array([0.0, 10, 20]), np.array([0.0, 1, 1])), (np.array([0.0, 20, 30]), np.array([0.0, 0, 1]))]
    )
    assert x.tolist() == [0, 10, 20, 30] and y.tolist() == [0.0, 0.5, 0.5, 1.0]


def test_token_speedups_use_interpolated_curves():
    # two seeds of each arm generate different token counts per step
    uniform = curves("uniform", {0: [0.1, 0.3, 0.5]}, tokens_per_step=100)
    uniform += curves("uniform", {1: [0.1, 0.3, 0.5]}, tokens_per_step=110)
    short = curves("length", {0: [0.1, 0.3, 0.5]}, tokens_per_step=50)
    short += curves("length", {1: [0.1, 0.3, 0.5]}, tokens_per_step=55)
    entry = summarize(pl.DataFrame(uniform + short))["arms"]["length"]
    assert entry["speedup_steps"] == pytest.approx(1.0)
    assert entry["tokens_to_target"] == pytest.approx(1100.0)  # when the slower seed gets there
    assert entry["speedup_tokens"] == pytest.approx(2.0)


def test_a_twice_as_fast_arm_gets_a_speedup_of_two_with_a_tight_interval():
    uniform = {s: [0.1, 0.2, 0.3, 0.4, 0.5] for s in range(3)}
    fast = {s: [0.1, 0.3, 0.5, 0.6, 0.7] for s in range(3)}
    frame = pl.DataFrame(curves("uniform", uniform) + curves("gainrl", fast))
    summary = summarize(frame)
    entry = summary["arms"]["gainrl"]
    assert summary["target_accuracy"] == pytest.approx(0.5)
    assert entry["steps_to_target"] == pytest.approx(20.0)
    assert entry["speedup_steps"] == pytest.approx(2.0)
    assert entry["speedup_steps_ci95"] == pytest.approx((2.0, 2.0))
    assert entry["speedup_tokens"] == pytest.approx(2.0)
    assert any("2.00x" in line and "faster in steps" in line for line in summary["verdict"])


def test_noisy_seeds_give_an_interval_through_one_and_no_claim():
    uniform = {0: [0.1, 0.3, 0.5], 1: [0.1, 0.2, 0.3], 2: [0.1, 0.4, 0.4]}
    other = {0: [0.1, 0.45, 0.5], 1: [0.1, 0.2, 0.25], 2: [0.1, 0.3, 0.4]}
    summary = summarize(pl.DataFrame(curves("uniform", uniform) + curves("length", other)))
    lo, hi = summary["arms"]["length"]["speedup_steps_ci95"]
    assert lo < 1.0 < hi
    assert summary["arms"]["length"]["speedup_steps"] == 0.0  # its mean curve stops short
    line = next(v for v in summary["verdict"] if v.startswith("length") and "in steps" in v)
    assert "never reached" in line and f"{lo:.2f}-{hi:.2f}" in line
    closer = {0: [0.1, 0.5, 0.5], 1: [0.1, 0.2, 0.3], 2: [0.1, 0.3, 0.45]}  # mean 0.417 > 0.4
    summary = summarize(pl.DataFrame(curves("uniform", uniform) + curves("length", closer)))
    lo, hi = summary["arms"]["length"]["speedup_steps_ci95"]
    assert lo < 1.0 < hi
    line = next(v for v in summary["verdict"] if v.startswith("length vs uniform in steps"))
    assert "the interval includes 1, so no difference is shown" in line


def test_an_arm_that_never_reaches_the_target_is_said_so():
    frame = pl.DataFrame(curves("uniform", {0: [0.1, 0.5]}) + curves("reverse", {0: [0.1, 0.2]}))
    summary = summarize(frame)
    assert summary["arms"]["reverse"]["speedup_steps"] == 0.0
    assert summary["arms"]["reverse"]["steps_to_target"] is None
    assert any("never reached" in line for line in summary["verdict"])


def test_a_uniform_arm_that_learned_nothing_is_flagged():
    frame = pl.DataFrame(curves("uniform", {0: [0.3, 0.3]}) + curves("gainrl", {0: [0.3, 0.4]}))
    assert "uniform learned nothing" in summarize(frame)["verdict"][0]


def test_ordered_arms_are_compared_with_length_by_area_under_the_curve():
    uniform = {s: [0.1, 0.2, 0.3] for s in range(3)}
    length = {s: [0.1, 0.3, 0.4] for s in range(3)}
    gainrl = {s: [0.1, 0.1, 0.2] for s in range(3)}
    summary = summarize(
        pl.DataFrame(curves("uniform", uniform) + curves("gainrl", gainrl) + curves("length", length))
    )
    entry = summary["arms"]["gainrl"]
    assert entry["auc_minus_length"] == pytest.approx((0.125) - (0.275))
    assert entry["auc_minus_length_ci95"][1] < 0
    assert "auc_minus_length" not in summary["arms"]["length"]
    assert any(line.startswith("gainrl did worse than length") for line in summary["verdict"])


def table_rows(page: str) -> dict[str, list[str]]:
    """{arm: its cells' text} of the pilot section's table."""
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", page)]
    return {row[0]: row for row in rows}


def test_no_learning_claims_no_speedup_and_the_table_agrees():
    """uniform flat: no "1.00x" speedups, no "steps to target 0.000", no "n/a n/a"."""
    from anglecurate.reporting.pilot_section import pilot_html

    flat = {s: [0.3, 0.3, 0.3] for s in range(2)}
    rising = {s: [0.3, 0.4, 0.5] for s in range(2)}
    frame = pl.DataFrame(curves("uniform", flat) + curves("gainrl", flat) + curves("length", rising))
    summary = summarize(frame)
    assert summary["baseline_learned"] is False
    for arm, entry in summary["arms"].items():
        assert entry["steps_to_target"] is None and entry["tokens_to_target"] is None, arm
        if arm != "uniform":
            assert entry["speedup_steps"] is None and entry["speedup_tokens_ci95"] is None, arm
    verdict = summary["verdict"]
    assert verdict[0].startswith("uniform learned nothing") and "no speedup" in verdict[0]
    assert not any(re.search(r"\d\.\d\dx", line) for line in verdict)  # no ratio is claimed
    assert "length: final held-out accuracy 0.500 vs 0.300 before training" in verdict
    assert any(line.startswith("gainrl did worse than length") for line in verdict)

    page = pilot_html({**summary, "runs_finished": 6, "runs_planned": 6}, None)
    by_arm = table_rows(page)
    assert by_arm["uniform"][7:10] == ["n/a", "baseline", "baseline"]
    assert by_arm["gainrl"][7:10] == by_arm["length"][7:10] == ["n/a", "n/a", "n/a"]
    assert by_arm["length"][2:4] == ["0.300", "0.500"]  # before and final, as the verdict says
    assert "n/a n/a" not in page and "0.000" not in page
    assert "uniform learned nothing" in page and "no target" in page


def test_the_table_says_never_and_formats_steps_when_uniform_learned():
    from anglecurate.reporting.pilot_section import pilot_html

    uniform = {s: [0.1, 0.2, 0.3, 0.4, 0.5] for s in range(3)}
    fast = {s: [0.1, 0.3, 0.5, 0.6, 0.7] for s in range(3)}
    slow = {s: [0.1, 0.1, 0.2, 0.2, 0.2] for s in range(3)}
    frame = pl.DataFrame(curves("uniform", uniform) + curves("gainrl", fast) + curves("reverse", slow))
    summary = summarize(frame)
    assert summary["baseline_learned"] is True
    page = pilot_html(summary, None)
    rows = table_rows(page)
    assert rows["uniform"][7:10] == ["40.0", "baseline", "baseline"]
    assert rows["gainrl"][7:10] == ["20.0", "2.00x [2.00, 2.00]", "2.00x [2.00, 2.00]"]
    assert rows["reverse"][7] == "never" and rows["reverse"][8].startswith("0.00x")
    assert any(line.startswith("reverse (mean over seeds) never reached") for line in summary["verdict"])
