"""A self-contained HTML report of a ranking folder: what the score looks like, how it moves
across depth, whether it tracks question length or another column, and (when ``anglecurate
validate`` ran) whether it tracks the training signal.

``write_report(OUT)`` writes ``OUT/report/report.html`` with every figure embedded as a data
URI, and the figures as PNG files beside it (drawn by :mod:`anglecurate.reporting.figures`, the page
laid out by :mod:`anglecurate.reporting.page`). Parquet is scanned lazily and only the needed columns
are read; the per-layer curves are accumulated one part at a time
(:mod:`anglecurate.reporting.summaries`). Distributions, deciles and correlations use every row;
scatter plots show a seeded sample of at most ``sample`` points (20,000 by default).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.reporting import figures as fig
from anglecurate.reporting.calibration_section import PNG as CALIBRATION_PNG
from anglecurate.reporting.calibration_section import draw_calibration, read_calibration
from anglecurate.reporting.page import CAPTIONS, ENDS, primary_target, render
from anglecurate.reporting.pilot_section import copy_figure, find_pilot, read_pilot
from anglecurate.reporting.summaries import MAX_CATEGORIES, floats, is_categorical, layer_stats
from anglecurate.scoring.store import OutputDir
from anglecurate.stats.correlation import spearman
from anglecurate.storage.lock import exclusive_writer

DEFAULT_SAMPLE = 20_000


@dataclass
class ReportResult:
    html: Path
    figures: list[Path] = field(default_factory=list)


def write_report(
    ranking: str | Path,
    out: str | Path | None = None,
    by: Sequence[str] = (),
    sample: int | None = None,
    pilot: str | Path | None = None,
) -> ReportResult:
    """Write the report of the ranking folder ``ranking`` into ``out`` (default ``ranking/report``).

    ``by``: columns to break the score down by (a numeric column gives a scatter, a string,
    boolean or few-valued integer column a box per value). ``sample``: most points drawn in a
    scatter plot (default 20,000). The report is built in a folder beside ``out`` and renamed
    into place, replacing an earlier report whole; a failure leaves the earlier report as it was.
    ``pilot``: a pilot folder whose verdict the report shows (default: the pilot that scored
    this ranking, when ``ranking`` is its ``P/ranking``).
    Raises :class:`UserError` for a missing or unfinished ranking, no scored rows, or an
    unusable ``by`` column or ``out`` folder.
    """
    ranking = Path(ranking)
    target = ranking / "report" if out is None else Path(out)
    # A report inside the ranking folder is one of its writers; one elsewhere only reads it
    # (which may then be read-only), and its own folder is swapped in whole.
    inside = target.resolve().is_relative_to(ranking.resolve())
    with exclusive_writer(ranking if inside else target, lock=inside, create=False):
        return _write_report(ranking, target, by, sample, pilot)


def _write_report(ranking: Path, target: Path, by, sample: int | None, pilot) -> ReportResult:
    manifest, parts = _open_ranking(ranking)
    cap = DEFAULT_SAMPLE if sample is None else int(sample)
    if cap < 1:
        raise UserError(f"sample={sample}: the most points drawn in a scatter must be at least 1")
    lazy = pl.scan_parquet(parts)
    schema = lazy.collect_schema()
    missing = [c for c in ("rank", "score", "n_question") if c not in schema]
    if missing:
        raise UserError(f"{ranking} lacks column(s) {', '.join(missing)}; rerun `anglecurate score`")
    by = list(dict.fromkeys(by))
    categorical = _by_kinds(lazy, schema, by)
    _check_target(target, ranking)
    validate = _read_validate(ranking)
    pilot_folder = find_pilot(ranking, pilot)
    calibration = read_calibration(ranking)
    fig.pyplot()  # a missing matplotlib fails before any work

    controlled = (
        bool(manifest.get("ranking", {}).get("length_control")) and "score_length_controlled" in schema
    )
    key_column = "score_length_controlled" if controlled else "score"  # what the rank follows
    data = lazy.select(list(dict.fromkeys(["rank", "score", "n_question", key_column, *by]))).collect()
    if data.height == 0:
        raise UserError(f"{ranking} has no scored rows (every row was skipped); nothing to report")
    score = floats(data["score"])
    if not np.isfinite(score).any():
        raise UserError(
            f"every score in {ranking} is NaN ({data.height:,} rows); check the weights and prompt"
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)
        info = _score_info(manifest)
        drawn, captions = _draw(tmp, manifest, parts, schema, data, key_column, categorical, cap, info)
        if calibration is not None:  # first: what to look at before training on an order
            drawn.insert(0, draw_calibration(tmp / CALIBRATION_PNG, *calibration))
        if validate is not None:
            drawn += _validate_figures(ranking, tmp, validate, info)
        name = primary_target(validate)
        for path in drawn:
            title, text = CAPTIONS.get(path.stem, ("", ""))
            captions.setdefault(path.stem, (title.format(target=name), text.format(target=name)))
        top, bottom = _ends(lazy, schema, manifest, key_column)
        shown = None
        if pilot_folder is not None:
            png = copy_figure(pilot_folder, tmp)
            drawn += [png] if png else []
            captions["pilot"] = (CAPTIONS["pilot"][0], CAPTIONS["pilot"][1])
            shown = read_pilot(pilot_folder)
        summary = calibration[0] if calibration is not None else None
        page = render(
            manifest,
            info,
            data.height,
            score,
            drawn,
            captions,
            validate,
            top,
            bottom,
            ranking,
            shown,
            summary,
        )
        (tmp / "report.html").write_text(page, encoding="utf-8")
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ReportResult(target / "report.html", [target / p.name for p in drawn])


def _by_kinds(lazy: pl.LazyFrame, schema: pl.Schema, by: list[str]) -> dict[str, bool]:
    """{column: categorical?} for the --by columns, checked before any of them is loaded."""
    scalar = [c for c, t in schema.items() if not isinstance(t, pl.List | pl.Array | pl.Struct | pl.Object)]
    for col in by:
        if col not in schema:
            offered = ", ".join(_offered(lazy, schema, scalar))
            raise UserError(f"--by {col!r} is not a column of the ranking; available: {offered}")
        if col not in scalar:
            raise UserError(
                f"--by {col!r} is a {schema[col]} column, not a scalar; "
                f"choose one of: {', '.join(_offered(lazy, schema, scalar))}"
            )
    if not by:
        return {}
    counts = (
        lazy.select(
            pl.len().alias("__rows__"),
            *(pl.col(c).n_unique().alias(f"__distinct__{c}") for c in by),
            *_value_counts(schema, by),
        )
        .collect()
        .row(0, named=True)
    )
    kinds = {}
    for col in by:
        distinct, rows = counts[f"__distinct__{col}"], counts["__rows__"]
        if rows and not counts[col]:  # an all-null column draws an empty plot: refuse it
            raise UserError(
                f"--by {col!r} holds no value in any of the {rows:,} rows (all null or NaN); "
                f"choose one of: {', '.join(_offered(lazy, schema, scalar))}"
            )
        kinds[col] = is_categorical(schema[col], distinct)
        if kinds[col] and distinct > max(MAX_CATEGORIES, rows // 2):
            raise UserError(
                f"--by {col!r} has {distinct:,} distinct values in {rows:,} rows, too many for a "
                "category (an id or free text?); choose a category or a numeric column"
            )
    return kinds


def _value_counts(schema: pl.Schema, cols: list[str]) -> list[pl.Expr]:
    """Per column, the rows that hold a value: not null, and for a float column not NaN."""
    held = {c: pl.col(c).is_not_null() for c in cols}
    held = {c: e & pl.col(c).is_not_nan() if schema[c].is_float() else e for c, e in held.items()}
    return [e.sum().alias(c) for c, e in held.items()]


def _offered(lazy: pl.LazyFrame, schema: pl.Schema, scalar: list[str]) -> list[str]:
    """The scalar columns a --by error offers: those holding a value in some row (one scan,
    on the error path only)."""
    held = lazy.select(_value_counts(schema, scalar)).collect().row(0, named=True)
    return [c for c in scalar if held[c]]


def _draw(tmp: Path, manifest, parts, schema, data, key_column, categorical, cap, info):
    """The ranking's figures in page order, and captions for the by-column ones."""
    score = floats(data["score"])
    shown = slice(None)
    if data.height > cap:
        shown = np.sort(np.random.default_rng(0).choice(data.height, cap, replace=False))
    controlled = floats(data[key_column]) if key_column != "score" else None
    drawn = [fig.score_distribution(tmp / "score_distribution.png", score, controlled, info)]
    layer_ids = list(manifest.get("run", {}).get("layers") or [])
    if layer_ids and {"c_intra_layers", "c_inter_layers"} <= set(schema):
        key = floats(data[key_column])
        stats, k = layer_stats(parts, layer_ids, floats(data["rank"]), key, key_column)
        mark = info.layer if info.layer in layer_ids else None
        drawn.append(fig.layers(tmp / "layers.png", layer_ids, stats, mark, k))
    n_q = floats(data["n_question"])
    rho, _, n = spearman(n_q, score)
    path, label = tmp / "score_vs_length.png", "n_question (tokens)"
    drawn.append(fig.score_vs(path, n_q[shown], score[shown], label, rho, n, data.height, fig.wide(n_q)))
    taken: set[str] = set()
    captions = {}
    for col, is_cat in categorical.items():
        path = tmp / f"{fig.file_stem(col, taken)}.png"
        drawn.append(fig.by_column(path, col, data[col], score, shown, is_cat))
        title, text = CAPTIONS["by_categorical" if is_cat else "by_numeric"]
        captions[path.stem] = (title.format(col=col), text.format(col=col))
    return drawn, captions


def _open_ranking(ranking: Path) -> tuple[dict, list[Path]]:
    if not ranking.is_dir():
        raise UserError(f"--ranking {ranking} is not a folder; pass the --out folder of `anglecurate score`")
    path = ranking / "manifest.json"
    if not path.exists():
        raise OutputDir(ranking).no_ranking()
    try:
        manifest = json.loads(path.read_text())
        parts = [ranking / p["file"] for p in manifest["outputs"]["ranked"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is not an anglecurate manifest ({exc!r}); rerun `anglecurate score`"
        ) from None
    absent = [str(p) for p in parts if not p.exists()]
    if absent:
        raise UserError(f"ranking {ranking} is incomplete: {absent[0]} is missing; rerun `anglecurate score`")
    if not parts:
        raise UserError(
            f"{ranking} has no scored rows (the manifest lists no ranked parts); nothing to report"
        )
    return manifest, parts


def _check_target(target: Path, ranking: Path) -> None:
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} is a file; pass a folder path (it is created)")
    resolved = target.resolve()
    if resolved == ranking.resolve() or resolved in ranking.resolve().parents:
        raise UserError(f"--out {target} would replace the ranking folder; pass a folder of its own")
    if target.is_dir() and any(target.iterdir()) and not (target / "report.html").exists():
        raise UserError(f"--out {target} holds files but no report.html; pass a new or empty folder")


def _swap(tmp: Path, target: Path) -> None:
    """Rename the finished folder into place; an earlier report is moved aside, then deleted."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}") if target.exists() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _score_info(manifest: dict) -> fig.ScoreInfo:
    run, rk = manifest.get("run", {}), manifest.get("ranking", {})
    weights = run.get("weights", {})  # older manifests: run.rank_layer and run.weights
    layer = rk.get("layer", run.get("rank_layer"))
    layers = run.get("layers") or []
    if layer is None or not layers:
        note = "ranking layer"
    elif layer == max(layers):
        note = "the deepest scored layer"
    else:
        note = f"chosen; scored layers {min(layers)}\u2013{max(layers)}"
    w_intra, w_inter = rk.get("w_intra", weights.get("intra")), rk.get("w_inter", weights.get("inter"))
    return fig.ScoreInfo(
        rk.get("metric", "angles"), layer, note, w_intra, w_inter, bool(rk.get("length_control"))
    )


def _read_validate(ranking: Path) -> dict | None:
    path = ranking / "validate.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc}); rerun `anglecurate validate` or delete it"
        ) from None


def _validate_figures(ranking: Path, tmp: Path, val: dict, info) -> list[Path]:
    """validate_layers.png from validate.json's correlations with the primary target, and
    validate_scatter.png from validate.parquet when it has the target column."""
    target = primary_target(val)
    rows = [
        r
        for r in val.get("correlations", [])
        if r.get("target") == target
        and r.get("layer") is not None
        and r.get("component") in fig.COMPONENT_COLORS
    ]
    out = []
    if rows:
        marks = []  # the figure draws roles on one layer as one band
        rec = val.get("recommendation") or {}
        if rec.get("layer") is not None:
            marks.append((rec["layer"], "recommended"))
        chosen = re.search(r"@(-?\d+)$", str((val.get("split") or {}).get("chosen_feature", "")))
        if chosen:
            marks.append((int(chosen.group(1)), "chosen on first half"))
        if info.layer is not None:
            marks.append((info.layer, "ranking layer"))
        out.append(fig.validate_layers(tmp / "validate_layers.png", rows, target, marks))
    vpath = ranking / "validate.parquet"
    if vpath.exists():
        vlazy = pl.scan_parquet(vpath)
        if {"score", "half", target} <= set(vlazy.collect_schema()):
            v = vlazy.select("score", "half", target).collect()
            half = v["half"].cast(pl.String).fill_null("?").to_numpy()
            out.append(
                fig.validate_scatter(
                    tmp / "validate_scatter.png", floats(v["score"]), floats(v[target]), half, target
                )
            )
    return out


def _ends(
    lazy: pl.LazyFrame, schema: pl.Schema, manifest: dict, key: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The first and last ``ENDS`` rows whose ranking key is finite, in rank order (as the parts are)."""
    text = manifest.get("run", {}).get("dataset", {}).get("field")
    cols = [c for c in ("rank", "uid", "score", "c_intra", "c_inter", "n_question") if c in schema]
    cols += [text] if text in schema and text not in cols else []
    finite = lazy.filter(pl.col(key).is_finite() & pl.col("rank").is_not_null()).select(cols)
    return finite.head(ENDS).collect(), finite.tail(ENDS).collect()
