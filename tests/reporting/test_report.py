"""The HTML report: figures written and embedded, prompts escaped, --by dispatch, validate
sections only with validate.json, errors a user can cause, and atomic replacement.

Every test runs on a synthetic ranking folder written by :func:`make_ranking` in the ranking
schema (manifest.json with ``ranking``, ranked parts with per-layer lists, optional
validate.json / validate.parquet): no model is loaded."""

from __future__ import annotations

import base64
import html
import json
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
from anglecurate.reporting.write import write_report
from anglecurate.stats.correlation import spearman

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SYSTEM_SENTINEL = "SYSTEM-SENTINEL please reason step by step"
EARLIER_TURN = "EARLIER-TURN-SENTINEL"
BASE = ("score_distribution", "layers", "score_vs_length")


def make_ranking(
    root: Path,
    rows: int = 300,
    n_layers: int = 30,
    rank_layer: int = 20,
    messages: bool = False,
    validate: bool = False,
    length_control: bool = False,
    nan_rows: int = 6,
    part_rows: int = 128,
    seed: int = 0,
) -> Path:
    """A finished ranking folder: rows whose per-layer angles follow a smooth depth profile
    plus a per-row latent that also drives length, level and difficulty."""
    rng = np.random.default_rng(seed)
    layers = list(range(n_layers))
    depth = np.linspace(0, 1, n_layers)
    n_question = np.clip(np.exp(rng.normal(4.0, 0.8, rows)), 3, 2000).astype(np.int32)
    latent = -0.6 * (np.log(n_question) - 4.0) / 0.8 + rng.normal(0, 0.8, rows)
    intra = (
        0.55
        - 0.3 * np.sin(np.pi * depth)
        + 0.06 * depth * latent[:, None]
        + rng.normal(0, 0.02, (rows, n_layers))
    )
    inter = (
        0.35
        - 0.2 * np.sin(np.pi * depth)
        + 0.04 * depth * latent[:, None]
        + rng.normal(0, 0.02, (rows, n_layers))
    )
    nan_at = rng.choice(rows, nan_rows, replace=False)
    intra[nan_at] = np.nan  # one-token questions: no pairs
    n_question[nan_at] = 1
    pos = layers.index(rank_layer)
    score = intra[:, pos] + 8.0 * inter[:, pos]
    # a stand-in for the monotone fit: score minus the median score of its length decile
    bins = np.digitize(np.log(n_question), np.quantile(np.log(n_question), np.linspace(0.1, 0.9, 9)))
    medians = {}
    for b in np.unique(bins):
        values = score[(bins == b) & ~np.isnan(score)]
        medians[b] = np.median(values) if len(values) else np.nan
    controlled = score - np.array([medians[b] for b in bins])
    key = controlled if length_control else score
    order = np.lexsort((np.arange(rows), np.where(np.isnan(key), np.inf, -key)))  # NaN last
    rank = np.empty(rows, np.int64)
    rank[order] = np.arange(rows)
    difficulty = np.round(np.clip(3 - latent + rng.normal(0, 0.5, rows), 0, 6), 2)
    questions = [
        f"Question {i}: is <b>{i} & {i + 1}</b> prime? " + ("Explain at length. " * 30 if i % 7 == 0 else "")
        for i in range(rows)
    ]
    frame = pl.DataFrame(
        {
            "uid": [f"q{i:04d}" for i in range(rows)],
            "row_index": np.arange(rows, dtype=np.int64),
            "rank": rank,
            "score": score,
            "score_length_controlled": controlled,
            "c_intra": intra[:, pos],
            "c_inter": inter[:, pos],
            "c_intra_layers": intra.astype(np.float32).tolist(),
            "c_inter_layers": inter.astype(np.float32).tolist(),
            "gainrl_reference": pl.Series([None] * rows, dtype=pl.Float64),
            "n_tokens": n_question + 120,
            "n_prefix": np.full(rows, 110, np.int32),
            "n_question": n_question,
            "truncated": np.zeros(rows, bool),
            "level": [
                f"Level {int(np.clip(round(d), 1, 10))}" if d > 0.6 else "Level 10" for d in difficulty
            ],
            "type": rng.choice(["Algebra", "Geometry", "Number Theory"], rows),
            "difficulty": difficulty,
            "stars": rng.integers(1, 4, rows).astype(np.int64),
        },
        schema_overrides={"c_intra_layers": pl.List(pl.Float32), "c_inter_layers": pl.List(pl.Float32)},
    )
    if messages:
        prompt = [
            [
                {"role": "system", "content": SYSTEM_SENTINEL},
                {"role": "user", "content": EARLIER_TURN},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": q},
            ]
            for q in questions
        ]
        frame = frame.with_columns(pl.Series("prompt", prompt))
    else:
        frame = frame.with_columns(pl.Series("question", questions))
    frame = frame.sort("rank")
    (root / "ranked").mkdir(parents=True)
    outputs = []
    for k, start in enumerate(range(0, rows, part_rows)):
        name = f"ranked/part-{k:05d}.parquet"
        frame.slice(start, part_rows).write_parquet(root / name)
        outputs.append({"file": name, "rows": min(part_rows, rows - start)})
    manifest = {
        "anglecurate_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "run": {
            "model": {"path": "/models/synthetic-qwen-1.5b", "num_layers": n_layers},
            "dataset": {"path": "/data/math-train.parquet", "field": "prompt" if messages else "question"},
            "layers": layers,
        },
        "ranking": {
            "metric": "angles",
            "layer": rank_layer,
            "w_intra": 1.0,
            "w_inter": 8.0,
            "length_control": length_control,
            "nan_policy": "last",
        },
        "counts": {"scored": rows, "skipped": {"too_long": 2}, "truncated": 0, "undefined_score": nan_rows},
        "outputs": {"ranked": outputs, "skipped": None},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    if validate:
        write_validate(root, frame, layers, rng)
    return root


def write_validate(root: Path, frame: pl.DataFrame, layers: list[int], rng) -> None:
    correlations = []
    for layer in layers:
        for comp, scale in (("intra", 0.35), ("inter", -0.15), ("combined", 0.25)):
            rho = float(scale * np.sin(np.pi * layer / len(layers)) + rng.normal(0, 0.03))
            correlations.append(
                {
                    "feature": f"c_{comp}@{layer}",
                    "layer": layer,
                    "component": comp,
                    "target": "grad_norm",
                    "rho": rho,
                    "ci_low": rho - 0.12,
                    "ci_high": rho + 0.12,
                    "p": 0.01,
                    "p_fwer": 0.2 - abs(rho) / 2,
                    "partial_rho": rho * 0.8,
                    "n": 120,
                }
            )
    correlations.append(
        {
            "feature": "score",
            "layer": None,
            "component": "score",
            "target": "grad_norm",
            "rho": -0.13,
            "ci_low": -0.25,
            "ci_high": 0.0,
            "p": 0.04,
            "p_fwer": 0.3,
            "partial_rho": -0.05,
            "n": 120,
        }
    )
    sample = frame.filter(pl.col("score").is_not_nan()).head(60).vstack(frame.tail(60))
    sample = sample.filter(pl.col("score").is_not_nan())
    n = sample.height
    grad = np.exp(0.5 * np.nan_to_num(sample["score"].to_numpy()) + rng.normal(0, 0.5, n))
    pl.DataFrame(
        {
            "uid": sample["uid"],
            "rank": sample["rank"],
            "half": np.where(np.arange(n) % 2 == 0, "choose", "hold_out"),
            "score": sample["score"],
            "n_question": sample["n_question"],
            "loss": rng.uniform(0.5, 2.0, n),
            "grad_norm": pl.Series(grad).set(pl.Series([False] * (n - 1) + [True]), None),
            "grad_mlp_in": rng.uniform(0, 1, n),
        }
    ).write_parquet(root / "validate.parquet")
    validate = {
        "primary_target": "grad_norm",
        "targets": {"grad_norm": "whole-model gradient norm of the reference answer's loss"},
        "correlations": correlations,
        "confounds": [
            {
                "feature": "c_intra@8",
                "covariate": "n_question",
                "rho": -0.61,
                "ci_low": -0.7,
                "ci_high": -0.5,
                "n": 120,
            },
        ],
        "split": {
            "chosen_feature": "c_intra@15",
            "choose_rho": 0.36,
            "hold_out_rho": 0.21,
            "hold_out_ci": [0.03, 0.38],
            "holds": True,
        },
        "recommendation": {"metric": "angles", "layer": 14, "w_intra": 1.0, "w_inter": 0.0},
        "why": "c_intra at layer 15 tracked grad_norm on the choose half <and> held out.",
    }
    (root / "validate.json").write_text(json.dumps(validate))


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
