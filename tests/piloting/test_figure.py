"""``pilot.png`` read at a glance: whole-number step ticks, an accuracy axis inside [0, 1],
and arms whose curves coincide still visible and named."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from anglecurate.piloting.figure import accuracy_limits, draw_pilot, pilot_figure
from anglecurate.reporting.figures import pyplot


def frame(accuracies: dict[str, list[float]], seeds: int = 2) -> pl.DataFrame:
    rows = []
    for arm, accs in accuracies.items():
        for seed in range(seeds):
            for step, acc in enumerate(accs):
                tokens = step * (30 + seed)
                rows.append({"arm": arm, "seed": seed, "step": step, "tokens": tokens, "accuracy": acc})
    return pl.DataFrame(rows)


@pytest.fixture
def tiny():
    """Two steps; uniform and gainrl learn nothing (the same flat curve), length rises."""
    fig = pilot_figure(frame({"uniform": [0, 0, 0], "gainrl": [0, 0, 0], "length": [0, 0.25, 0.25]}), "t")
    yield fig
    pyplot().close(fig)


def test_steps_tick_whole_numbers(tiny):
    for ax in tiny.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert len(ticks) >= 2 and all(t == round(t) for t in ticks), ticks
    steps = [t for t in tiny.axes[0].get_xticks() if 0 <= t <= 2]
    assert steps == [0, 1, 2]  # not 0.00, 0.25, ...


def test_accuracy_stays_inside_zero_and_one(tiny):
    lo, hi = tiny.axes[0].get_ylim()
    assert lo == 0.0 and 0.25 < hi <= 1.0
    assert accuracy_limits(0.0, 0.0) == (0.0, pytest.approx(0.1))
    assert accuracy_limits(1.0, 1.0) == (pytest.approx(0.9), 1.0)
    assert accuracy_limits(0.0, 1.0) == (0.0, 1.0)
    lo, hi = accuracy_limits(0.3, 0.45)
    assert 0.25 < lo < 0.3 and 0.45 < hi < 0.5  # a real spread is not flattened to [0, 1]
    everything = pilot_figure(frame({"uniform": [0, 1, 1], "length": [1, 1, 1]}), "t")
    assert everything.axes[0].get_ylim() == (0.0, 1.0)
    pyplot().close(everything)


def test_identical_curves_stay_visible_and_are_named(tiny):
    lines = {line.get_label().split(" (")[0]: line for line in tiny.axes[0].lines}
    assert lines["uniform"].get_linewidth() > lines["gainrl"].get_linewidth()  # the hidden one peeks out
    assert lines["uniform"].get_markersize() > lines["gainrl"].get_markersize()
    assert len({line.get_marker() for line in lines.values()}) == 3
    assert lines["length"].get_linewidth() == lines["gainrl"].get_linewidth()  # only a hidden curve widens
    notes = " ".join(t.get_text() for t in tiny.texts)
    assert "identical mean curves in both panels: uniform = gainrl" in notes
    assert "length" not in notes


def test_distinct_curves_get_no_note_and_the_png_is_written(tmp_path):
    path = draw_pilot(frame({"uniform": [0.1, 0.2, 0.3], "gainrl": [0.1, 0.3, 0.4]}), tmp_path / "p.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = pilot_figure(frame({"uniform": [0.1, 0.2, 0.3], "gainrl": [0.1, 0.3, 0.4]}), "t")
    assert not any("identical" in t.get_text() for t in fig.texts)
    assert np.allclose([line.get_linewidth() for line in fig.axes[0].lines], 1.8)
    pyplot().close(fig)


def test_a_calibration_far_beyond_the_runs_turns_the_tokens_axis_logarithmic():
    """A measured arm whose rollouts cost more than any run's own span starts far right: the
    tokens axis turns symmetric-log there (linear up to the first evaluation) and says so;
    without such an arm it stays linear."""
    plain = frame({"uniform": [0.1, 0.2, 0.3], "pass-rate": [0.1, 0.3, 0.4]})
    fig = pilot_figure(plain, "t")
    assert fig.axes[1].get_xscale() == "linear"
    pyplot().close(fig)
    measured = plain.with_columns(order_tokens=pl.when(pl.col("arm") == "pass-rate").then(5000).otherwise(0))
    fig = pilot_figure(measured, "t")
    ax = fig.axes[1]
    assert ax.get_xscale() == "symlog" and "log scale past 30" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
    assert lo <= 0 and hi >= 5000 + 2 * 31  # every point on the panel
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 3 and all(t == round(t) for t in ticks), ticks
    assert fig.axes[0].get_xscale() == "linear"  # steps are never logarithmic
    pyplot().close(fig)


def test_each_evaluation_is_marked_once_on_the_tokens_axis():
    """Seeds evaluate at different token counts, so the mean curve has a vertex per seed's
    evaluation: the tokens panel marks each evaluation once, at its mean tokens over seeds,
    on the line."""
    fig = pilot_figure(frame({"uniform": [0.1, 0.2, 0.3, 0.35]}, seeds=3), "t")
    for ax in fig.axes[:2]:
        (line,) = ax.lines
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        marked = line.get_markevery()
        assert len(marked) == 4  # 4 evaluations, not 3 seeds x 4
        if ax is fig.axes[1]:
            assert len(x) > 4  # every seed's vertex is still on the line
            assert np.allclose(x[marked], [step * 31 for step in range(4)])  # mean of 30, 31, 32
            assert np.allclose(y[marked], np.interp(x[marked], x, y))
    pyplot().close(fig)
