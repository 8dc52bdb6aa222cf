"""The report's figures read at a glance: whole-layer ticks, marked layers told apart, a
binned median that spans the data (or a note that there are too few rows), legends and
notes off the points, upright category labels, no text past the edge, type that stays
legible on an 800 px page, an all-null --by column refused, and a page that wraps.

The figures are the real ones, drawn from :func:`make_ranking`'s synthetic rankings; the
drawing functions' ``_save`` is wrapped so the test can inspect each matplotlib figure."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from anglecurate.reporting import figures, plotting
from anglecurate.reporting.write import write_report

from ..helpers import run_cli
from .test_report import make_ranking

PAGE_PX = 757  # the page's column at an 800 px window, measured in headless Chromium
LEGIBLE_PX = 9.5  # smallest type, in CSS pixels, once a figure is scaled into that column


def keeper(kept: dict):
    """A stand-in for figures._save that writes the PNG and keeps the figure open in ``kept``."""

    def keep(fig, path):
        fig.savefig(path, format="png")
        kept[Path(path).stem] = fig
        return path

    return keep


@pytest.fixture
def drawn(monkeypatch):
    """{figure stem: matplotlib figure} of every report figure drawn during the test."""
    kept: dict[str, object] = {}
    monkeypatch.setattr(figures, "_save", keeper(kept))
    yield kept
    for fig in kept.values():
        figures.pyplot().close(fig)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The report of 24 rows, 2 scored layers, validate.json choosing the ranking layer (1)
    on its first half; its figures kept open."""
    import json

    root = make_ranking(
        tmp_path_factory.mktemp("small") / "OUT", rows=24, n_layers=2, rank_layer=1, validate=True, nan_rows=2
    )
    val = json.loads((root / "validate.json").read_text())
    val["split"]["chosen_feature"] = "c_intra@1"
    val["recommendation"]["layer"] = 0
    (root / "validate.json").write_text(json.dumps(val))
    kept: dict[str, object] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "_save", keeper(kept))
        write_report(root, by=["level"])
    yield root, kept
    for fig in kept.values():
        figures.pyplot().close(fig)


def visible_ticks(ax) -> np.ndarray:
    lo, hi = sorted(ax.get_xlim())
    ticks = np.asarray(ax.get_xticks())
    return ticks[(ticks >= lo - 1e-9) & (ticks <= hi + 1e-9)]


def texts(fig) -> list:
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_layer_axes_tick_whole_layers_only(small):
    _, drawn = small
    for stem in ("layers", "validate_layers"):
        for ax in drawn[stem].axes:
            ticks = visible_ticks(ax)
            assert len(ticks) >= 2, stem
            assert np.all(ticks == np.round(ticks)), (stem, ticks)
            assert set(ticks) == {0.0, 1.0}, stem  # the two scored layers, nothing between
            assert [ax.xaxis.get_major_formatter()(t) for t in ticks] == ["0", "1"], stem


def test_the_ranking_layer_is_named_in_the_legend_not_past_the_plot(small):
    _, drawn = small
    fig = drawn["layers"]
    assert "ranking layer 1" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("ranking layer" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_marks_on_one_layer_share_one_band_named_together(small):
    _, drawn = small
    (ax,) = drawn["validate_layers"].axes
    labels = [t.get_text() for t in drawn["validate_layers"].legends[0].get_texts()]
    assert "layer 1: chosen on first half, ranking layer" in labels
    assert "layer 0: recommended" in labels
    assert labels[:3] == ["intra", "inter", "combined"]  # the data first, then the marks
    bands = [p for p in ax.patches if p.get_label().startswith("layer ")]
    assert len(bands) == 2  # one per marked layer, not one per role
    vertical = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and np.ptp(ln.get_xdata()) == 0]
    assert not vertical  # no line drawn through the middle component's bars
    assert "side by side" in ax.get_xlabel()


def test_no_text_runs_past_the_figure_and_no_legend_covers_a_plot(small):
    _, drawn = small
    assert set(drawn) >= {"layers", "validate_layers", "validate_scatter", "score_vs_length", "by_level"}
    for stem, fig in drawn.items():
        fig.canvas.draw()
        ink, page = fig.get_tightbbox(), fig.bbox_inches  # everything drawn, in inches
        assert ink.x0 >= -0.01 and ink.y0 >= -0.01, stem
        assert ink.x1 <= page.x1 + 0.01 and ink.y1 <= page.y1 + 0.01, stem
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            for ax in fig.axes:
                assert not legend.get_window_extent().overlaps(ax.get_window_extent()), (stem, "legend")


def test_figures_stay_legible_on_an_800px_page(small):
    _, drawn = small
    for stem, fig in drawn.items():
        width_px = fig.get_figwidth() * fig.dpi
        assert width_px <= plotting.PAGE_WIDTH * 110 + 1, stem
        scale = min(1.0, PAGE_PX / width_px)
        smallest = min(t.get_fontsize() for t in texts(fig))
        assert smallest * fig.dpi / 72 * scale >= LEGIBLE_PX, (stem, smallest)


def steps(ax):
    from matplotlib.patches import StepPatch

    return [p for p in ax.patches if isinstance(p, StepPatch)]


def test_the_binned_median_spans_the_data(small):
    root, drawn = small
    (ax,) = drawn["score_vs_length"].axes
    (patch,) = steps(ax)
    x = np.array([xy[0] for xy in ax.collections[0].get_offsets()])
    edges = patch.get_data().edges
    assert edges[0] == pytest.approx(x.min()) and edges[-1] == pytest.approx(x.max())
    assert len(edges) - 1 == 3  # 22 finite rows: the fewest bins, not none
    # a long right tail (the 210 vs 377 tokens): the last bin still reaches the end
    rng = np.random.default_rng(0)
    tail = np.exp(rng.normal(4.0, 0.8, 40))
    fig, ax = figures.pyplot().subplots()
    note = plotting.binned_median(ax, tail, rng.normal(size=40), "n_question")
    (patch,) = steps(ax)
    assert patch.get_data().edges[[0, -1]] == pytest.approx([tail.min(), tail.max()])
    assert "3 quantile bins" in note
    figures.pyplot().close(fig)


def test_too_few_rows_for_a_binned_median_are_said_so(tmp_path, drawn):
    x, y = np.arange(12, dtype=float), np.linspace(0, 1, 12)
    figures.score_vs(tmp_path / "few.png", x, y, "difficulty", 0.5, 12, 12)
    fig = drawn["few"]
    assert not steps(fig.axes[0])
    assert any("too few rows (12) for a binned median" in t.get_text() for t in fig.texts)
    figures.score_vs(tmp_path / "sampled.png", np.arange(40.0), np.arange(40.0), "n", 1.0, 80, 80)
    notes = " ".join(t.get_text() for t in drawn["sampled"].texts)
    assert "a seeded sample of 40 of 80 rows" in notes and "quantile bins" in notes


def test_seven_level_labels_stay_upright_and_many_long_ones_turn(tmp_path, drawn, small):
    _, figs = small
    labels = [t for t in figs["by_level"].axes[0].get_xticklabels() if t.get_text()]
    assert labels and all(t.get_rotation() == 0 for t in labels)
    rng = np.random.default_rng(0)
    seven = [(f"Level {k}", rng.normal(size=20)) for k in (1, 2, 3, 4, 5, 6, 10)]
    figures.score_by_category(tmp_path / "by_level7.png", "level", seven, 0)
    ticks = [t for t in drawn["by_level7"].axes[0].get_xticklabels() if t.get_text()]
    assert len(ticks) == 7 and all(t.get_rotation() == 0 for t in ticks)
    assert ticks[-1].get_text() == "Level 10\n(n=20)"
    many = [(f"Subject area number {k}", rng.normal(size=20)) for k in range(24)]
    figures.score_by_category(tmp_path / "by_subject.png", "subject", many, 0)
    assert all(t.get_rotation() == 45 for t in drawn["by_subject"].axes[0].get_xticklabels() if t.get_text())


def test_an_all_null_by_column_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    root = make_ranking(tmp_path / "OUT", rows=40)  # gainrl_reference: null in every row
    code, _, err = run_cli(monkeypatch, capsys, "report", "--ranking", root, "--by", "gainrl_reference")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--by 'gainrl_reference' holds no value in any of the 40 rows" in lines[0]
    offered = lines[0].split("choose one of:")[1]
    assert "level" in offered and "gainrl_reference" not in offered
    assert not (root / "report").exists()
    code, _, err = run_cli(monkeypatch, capsys, "report", "--ranking", root, "--by", "nope")
    assert code == 2 and "gainrl_reference" not in err.split("available:")[1] and "difficulty" in err


def test_the_page_wraps_and_scrolls_tables_and_scales_figures(small):
    root, _ = small
    page = (root / "report" / "report.html").read_text()
    css = re.search(r"<style>(.*)</style>", page, flags=re.S).group(1)
    assert re.search(r"\.table-wrap \{[^}]*overflow-x: auto", css)
    assert re.search(r"img \{[^}]*max-width: 100%[^}]*height: auto", css)
    assert re.search(r"\.prompts td:last-child \{[^}]*overflow-wrap: anywhere", css)
    narrow = re.search(r"@media \(max-width: 900px\) \{(.*?)\n\}", css, flags=re.S).group(1)
    assert "main { padding: 16px 14px" in narrow and "font-size: 14px" in narrow
    assert page.count("<table") == page.count('<div class="table-wrap"><table') > 0
