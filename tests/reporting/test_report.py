"""The HTML report: figures written and embedded, prompts escaped, --by dispatch, validate
sections only with validate.json, errors a user can cause, and atomic replacement.

Every test runs on a synthetic ranking folder written by
:func:`anglecurate.reporting.synthetic.synthetic_ranking` in the ranking schema
(manifest.json with ``ranking``, ranked parts with per-layer lists, optional validate.json
/ validate.parquet): no model is loaded."""

from __future__ import annotations

import base64
import html
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from anglecurate.base.errors import UserError
from anglecurate.reporting import figures, summaries
from anglecurate.reporting.page import EXCERPT, prompt_text
from anglecurate.reporting.synthetic import EARLIER_TURN, SYSTEM_SENTINEL
from anglecurate.reporting.synthetic import synthetic_ranking as make_ranking
from anglecurate.reporting.write import write_report
from anglecurate.stats.correlation import spearman

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE = ("score_distribution", "layers", "score_vs_length")


def embedded(page: str) -> dict[str, bytes]:
    """{img id: decoded PNG bytes} of every data-URI image in the page."""
    found = re.findall(
        r'<img id="([^"]+)" alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page
    )
    assert all(i == a for i, a, _ in found)
    return {i: base64.b64decode(data) for i, _, data in found}


def assert_figures(result, stems) -> str:
    page = result.html.read_text(encoding="utf-8")
    images = embedded(page)
    assert sorted(p.stem for p in result.figures) == sorted(stems)
    assert sorted(images) == sorted(stems)
    for path in result.figures:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, path
        assert images[path.stem] == data
        assert base64.b64encode(data).decode() in page
    return page


def tiny_png() -> bytes:
    """A valid 1x1 PNG, for tests of the plumbing that need no real drawing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


@pytest.fixture
def fast_figures(monkeypatch):
    """Every drawing function replaced by one that writes a tiny PNG and records its arguments."""
    calls: dict[str, list[tuple]] = {}

    def stub(name):
        def draw(path, *args):
            calls.setdefault(name, []).append(args)
            Path(path).write_bytes(tiny_png())
            return Path(path)

        return draw

    for name in DRAWERS:
        monkeypatch.setattr(figures, name, stub(name))
    return calls


DRAWERS = (
    "score_distribution",
    "layers",
    "score_vs",
    "score_by_category",
    "validate_layers",
    "validate_scatter",
)
VALIDATE = ("validate_layers", "validate_scatter")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A default report: question strings, no --by, no validate.json."""
    root = make_ranking(tmp_path_factory.mktemp("plain") / "OUT")
    result = write_report(root)
    return root, result, result.html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Chat-message prompts, --by columns of every kind, and a validate.json."""
    root = make_ranking(tmp_path_factory.mktemp("full") / "OUT", validate=True, messages=True)
    result = write_report(root, by=["level", "difficulty", "type", "stars"])
    return root, result, result.html.read_text(encoding="utf-8")


def test_default_report_writes_and_embeds_each_figure(plain):
    root, result, _ = plain
    assert result.html == root / "report" / "report.html"
    page = assert_figures(result, BASE)
    assert page.startswith("<!doctype html>") and "validate" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing fetched
    assert sorted(p.name for p in (root / "report").iterdir()) == sorted(
        ["report.html"] + [f"{s}.png" for s in BASE]
    )
    for text in (
        "/models/synthetic-qwen-1.5b",
        "/data/math-train.parquet",
        "w_intra 1, w_inter 8",
        "layer 20",
    ):
        assert html.escape(text) in page


def test_top_and_bottom_prompts_are_shown_escaped(plain):
    root, _, page = plain
    ranked = pl.read_parquet(root / "ranked").filter(pl.col("score").is_not_nan()).sort("rank")
    assert "<b>" not in page  # every question holds "<b>...</b>"; none is pasted raw
    for row in ranked.head(10).vstack(ranked.tail(10)).iter_rows(named=True):
        text = prompt_text(row["question"])
        assert len(text) <= EXCERPT
        assert f"<td>{html.escape(text)}</td>" in page
        assert f"<td>{row['uid']}</td>" in page
    middle = ranked.slice(ranked.height // 2, 1)["question"][0]
    assert html.escape(prompt_text(middle)) not in page


def test_messages_column_shows_the_last_user_message(full):
    root, _, page = full
    ranked = pl.read_parquet(root / "ranked").filter(pl.col("score").is_not_nan()).sort("rank")
    for messages in ranked.head(10)["prompt"].to_list() + ranked.tail(10)["prompt"].to_list():
        text = prompt_text(messages)
        assert text.startswith("Question ")
        assert f"<td>{html.escape(text)}</td>" in page
    assert SYSTEM_SENTINEL not in page and EARLIER_TURN not in page


def test_prompt_text_truncates_and_collapses_whitespace():
    assert prompt_text("a\n\n  b") == "a b"
    long = prompt_text("x" * 1000)
    assert len(long) == EXCERPT and long.endswith("\u2026")
    assert prompt_text([{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]) == "two"
    assert prompt_text(None) == ""


def test_by_numeric_and_categorical_columns(full):
    _, result, page = full
    assert_figures(result, BASE + ("by_level", "by_difficulty", "by_type", "by_stars") + VALIDATE)
    assert re.search(r'id="by_difficulty".*?<code>by_difficulty.png</code>: Score against difficulty', page)
    for col in ("level", "type", "stars"):  # strings, and an integer with 3 values, are categories
        assert re.search(rf'id="by_{col}".*?<code>by_{col}.png</code>: One box per value of {col}', page)


def test_categories_reach_the_box_plot_whole_and_in_natural_order(tmp_path, fast_figures):
    root = make_ranking(tmp_path / "OUT")
    write_report(root, by=["level", "stars", "difficulty"])
    ranked = pl.read_parquet(root / "ranked")
    (level_col, level, _), (stars_col, stars, _) = fast_figures["score_by_category"]
    assert level_col == "level" and stars_col == "stars"
    names = [name for name, _ in level]
    assert "Level 10" in names and names == sorted(set(ranked["level"]), key=lambda s: int(s.split()[1]))
    assert [name for name, _ in stars] == ["1", "2", "3"]
    for column, categories in ((level_col, level), (stars_col, stars)):
        assert sum(len(v) for _, v in categories) == ranked.height
        for name, values in categories:
            expected = ranked.filter(pl.col(column).cast(pl.String) == name)["score"].to_numpy()
            np.testing.assert_array_equal(np.sort(values), np.sort(expected))
    scatters = [args[2] for args in fast_figures["score_vs"]]
    assert scatters == ["n_question (tokens)", "difficulty"]  # numeric: a scatter, not boxes


def test_missing_by_column_names_the_available_ones(tmp_path):
    root = make_ranking(tmp_path / "OUT")
    with pytest.raises(UserError) as err:
        write_report(root, by=["level", "nope"])
    message = str(err.value)
    assert "'nope'" in message and "\n" not in message
    for col in ("level", "difficulty", "question", "n_question"):
        assert col in message
    assert "c_intra_layers" not in message.split("available:")[1]  # list columns are not offered
    assert not (root / "report").exists()
    with pytest.raises(UserError, match="not a scalar"):
        write_report(root, by=["c_intra_layers"])
    for unique in ("uid", "question"):  # an id, free text: not categories
        with pytest.raises(UserError, match="too many for a category"):
            write_report(root, by=[unique])
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "ranked"]


def test_validate_section_only_with_validate_json(full, plain):
    _, result, page = full
    assert {p.stem for p in result.figures} >= set(VALIDATE)
    assert "--rank-layer 14" in page and "c_intra@15" in page
    assert html.escape("choose half <and> held out") in page  # the why text, escaped
    assert "0.210 [0.030, 0.380]" in page and "<td>yes</td>" in page
    assert "<h3>Confounds</h3>" in page and "c_intra@8" in page
    root, result, page = plain
    assert not any(p.stem.startswith("validate") for p in result.figures)
    assert not list((root / "report").glob("validate*"))
    assert 'id="validate' not in page


def test_validate_figures_follow_the_primary_target(tmp_path, fast_figures):
    root = make_ranking(tmp_path / "OUT", validate=True)
    write_report(root)
    ((rows, target, marks),) = fast_figures["validate_layers"]
    assert target == "grad_norm" and len(rows) == 90  # 30 layers x intra, inter, combined; not "score"
    assert [m[0] for m in marks] == [14, 15, 20]  # recommended, chosen on the first half, ranking
    ((score, grad, half, name),) = fast_figures["validate_scatter"]
    assert name == "grad_norm" and np.isnan(grad).sum() == 1 and set(half) == {"choose", "hold_out"}


def test_rerun_replaces_the_report_whole(tmp_path, monkeypatch, fast_figures):
    root = make_ranking(tmp_path / "OUT")
    first = write_report(root, by=["level"])
    assert (root / "report" / "by_level.png").exists()
    second = write_report(root)  # a different report: by_level.png must not survive
    assert sorted(p.name for p in (root / "report").iterdir()) == sorted(
        ["report.html"] + [f"{s}.png" for s in BASE]
    )
    assert second.html == first.html and "by_level" not in second.html.read_text()
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "ranked", "report"]  # no temp dirs
    # a failure half-way leaves the previous report as it was, and no temp folder
    before = {p.name: p.read_bytes() for p in (root / "report").iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "score_vs", broken)
    with pytest.raises(RuntimeError):
        write_report(root, by=["level"])
    assert {p.name: p.read_bytes() for p in (root / "report").iterdir()} == before
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "ranked", "report"]


def test_custom_out_and_refusals(tmp_path, fast_figures):
    root = make_ranking(tmp_path / "OUT")
    result = write_report(root, out=tmp_path / "reports" / "r1")
    assert result.html == tmp_path / "reports" / "r1" / "report.html" and result.html.exists()
    assert result.figures == [tmp_path / "reports" / "r1" / f"{s}.png" for s in BASE]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="no report.html"):
        write_report(root, out=foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="replace the ranking"):
        write_report(root, out=root)
    with pytest.raises(UserError, match="at least 1"):
        write_report(root, sample=0)


def test_unfinished_missing_and_empty_rankings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        write_report(tmp_path / "absent")
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match="no manifest.json"):
        write_report(tmp_path / "bare")
    (tmp_path / "running" / ".anglecurate").mkdir(parents=True)
    with pytest.raises(UserError, match="unfinished run"):
        write_report(tmp_path / "running")
    empty = make_ranking(tmp_path / "empty", rows=20, nan_rows=0)
    part = empty / "ranked" / "part-00000.parquet"
    pl.read_parquet(part).clear().write_parquet(part)
    with pytest.raises(UserError, match="no scored rows"):
        write_report(empty)
    nan = make_ranking(tmp_path / "nan", rows=20, nan_rows=20)
    with pytest.raises(UserError, match="every score"):
        write_report(nan)
    gone = make_ranking(tmp_path / "gone")
    (gone / "ranked" / "part-00001.parquet").unlink()
    with pytest.raises(UserError, match="incomplete"):
        write_report(gone)
    for path in (empty, nan, gone):
        assert not (path / "report").exists()


def test_scatter_is_sampled_but_statistics_use_every_row(tmp_path, fast_figures):
    root = make_ranking(tmp_path / "OUT", rows=900, part_rows=400)
    write_report(root, sample=250)
    ((x, y, label, rho, n, total, log),) = fast_figures["score_vs"]
    assert len(x) == len(y) == 250 and total == 900 and log
    ranked = pl.read_parquet(root / "ranked")
    finite = ranked.filter(pl.col("score").is_not_nan())
    assert n == finite.height
    assert rho == pytest.approx(spearman(finite["n_question"].to_numpy(), finite["score"].to_numpy())[0])
    assert rho < -0.2  # the synthetic score falls with length
    ((score, controlled, _),) = fast_figures["score_distribution"]
    assert len(score) == 900 and controlled is None
    write_report(root, sample=5000)
    assert len(fast_figures["score_vs"][1][0]) == 900


def test_length_control_adds_the_controlled_panel(tmp_path, fast_figures):
    root = make_ranking(tmp_path / "OUT", length_control=True)
    write_report(root)
    ((score, controlled, _),) = fast_figures["score_distribution"]
    ranked = pl.read_parquet(root / "ranked")
    np.testing.assert_array_equal(controlled, ranked["score_length_controlled"].to_numpy())


@pytest.mark.parametrize("length_control", [False, True])
def test_layer_curves_match_a_direct_computation(tmp_path, length_control):
    root = make_ranking(tmp_path / "OUT", rows=400, length_control=length_control)
    ranked = pl.read_parquet(root / "ranked").sort("rank")
    key = "score_length_controlled" if length_control else "score"
    parts = sorted((root / "ranked").glob("*.parquet"))
    rank = ranked["rank"].to_numpy().astype(float)
    stats, k = summaries.layer_stats(parts, list(range(30)), rank, ranked[key].to_numpy(), key)
    finite = ranked.filter(pl.col(key).is_not_nan())
    assert k == 40 == -(-finite.height // 10)
    for comp in ("intra", "inter"):
        values = np.array(finite[f"c_{comp}_layers"].to_list(), dtype=np.float64)
        everything = np.array(ranked[f"c_{comp}_layers"].to_list(), dtype=np.float64)
        np.testing.assert_allclose(stats[comp]["top"].mean, values[:k].mean(0), rtol=1e-9)
        np.testing.assert_allclose(stats[comp]["bottom"].mean, values[-k:].mean(0), rtol=1e-9)
        np.testing.assert_allclose(stats[comp]["bottom"].std, values[-k:].std(0), rtol=1e-6)
        np.testing.assert_allclose(stats[comp]["all"].mean, np.nanmean(everything, 0), rtol=1e-9)
    assert stats["intra"]["top"].rows == stats["intra"]["bottom"].rows == k
    if not length_control:  # at the ranking layer the top decile is the more concentrated
        assert stats["inter"]["top"].mean[20] > stats["inter"]["bottom"].mean[20]


def test_category_order_is_natural():
    values = ["Level 10", "Level 2", "Level 1", None, "level 3"]
    assert sorted(values, key=summaries._natural) == ["Level 1", "Level 2", "level 3", "Level 10", None]
    assert sorted([3, 1, 2], key=summaries._natural) == [1, 2, 3]


def test_importing_the_report_stays_light():
    code = "import sys, anglecurate.reporting.write, anglecurate.reporting.figures; "
    code += "print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_synthetic_ranking_snippet_of_the_docs_runs_anywhere_without_pytest(tmp_path):
    """docs/report.md's snippet, as written, from a folder that is not the repository's,
    in a fresh interpreter where pytest cannot be imported."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text()
    snippet = doc.split("To make it yourself", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace("/tmp/example/OUT", str(tmp_path / "OUT"))
    blocked = "import sys\nsys.modules['pytest'] = None\n"  # `import pytest` fails
    done = subprocess.run(
        [sys.executable, "-c", blocked + snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "OUT" / "report" / "report.html").is_file()
    assert (tmp_path / "OUT" / "report" / "validate_layers.png").is_file()
    with pytest.raises(UserError, match="already holds a ranking; pass a new folder"):
        make_ranking(tmp_path / "OUT")
