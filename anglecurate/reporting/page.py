"""The report's HTML page: one self-contained document with a summary of the ranking, a section
per figure (each embedded as a data URI, with its title and caption), the top and bottom
prompts, and the validation tables when ``anglecurate validate`` ran. :mod:`anglecurate.reporting.write`
gathers what it shows; nothing here reads the ranking.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.reporting.calibration_section import calibration_html
from anglecurate.reporting.pilot_section import pilot_html

ENDS = 10  # top and bottom prompts shown
EXCERPT = 300  # characters of prompt text shown
CAPTIONS = {
    "calibration": (
        "Calibration: measured pass rate along the angle and calibrated orders",
        "Left: the mean measured pass rate of the rolled-out rows, binned by their position in each "
        "order; right: the share of their GRPO groups whose completions all earned the same reward (no "
        "gradient). The angle order is the score, highest first; the calibrated order is p_pass, highest "
        "(easiest) first, each row placed by its held-out prediction. An order whose first positions sit "
        "at a pass rate of 0 (or 1) starts training where nothing can be learned.",
    ),
    "score_distribution": (
        "Score distribution",
        "Histogram of every finite score; dashed lines mark the 10th and 90th percentiles (the bottom "
        "and top deciles). Rows with a NaN score (too few question or prefix tokens) are counted, not "
        "drawn. With length control on, the right panel is the score after removing its monotone trend "
        "in question length.",
    ),
    "layers": (
        "Layer-wise pattern",
        "Mean c_intra and c_inter at every scored layer for the top and bottom deciles of the ranking "
        "(bands: \u00b11 standard deviation) and for all rows (dashed). At the ranking layer the deciles "
        "are apart by construction; how far the gap reaches into other layers shows whether the order "
        "is a depth-wide property of the prompts or specific to one layer.",
    ),
    "score_vs_length": (
        "Score vs question length",
        "Each point is a row (a seeded sample when there are many); the black steps are the median score "
        "of the points drawn within quantile bins of length, each across its whole bin, so they span the "
        "data (with too few rows there are none, and the figure says so). \u03c1 is over every row with a "
        "finite score. A strong \u03c1 means the ranking is largely a length order.",
    ),
    "by_numeric": (
        "Score by {col}",
        "Score against {col}, with the median score of the points drawn within quantile bins of {col} "
        "(black steps, each across its bin) and Spearman \u03c1 over every row with both values (a seeded "
        "sample of points when there are many).",
    ),
    "by_categorical": (
        "Score by {col}",
        "One box per value of {col} (quartiles, median line, whiskers to 1.5 IQR, outliers hidden; "
        "diamond: mean), with its row count; values in natural order.",
    ),
    "validate_layers": (
        "Validation: correlation by layer",
        "Spearman \u03c1 between each layer's concentration and {target} on the validation sample, with "
        "95% confidence intervals; filled markers survive the family-wise correction. The components sit "
        "side by side around each layer; shaded bands mark the recommended, chosen and ranking layers "
        "(one band, with its roles named together, where they coincide). A useful layer sits "
        "away from zero with an interval that excludes it; the sign says whether high concentration goes "
        "with a larger or a smaller {target}.",
    ),
    "pilot": (
        "Pilot: held-out accuracy by arm",
        "mean over seeds (band: lowest to highest seed) against optimizer steps and generated tokens; each "
        "arm has its own marker, and curves that coincide are named under the plot",
    ),
    "validate_scatter": (
        "Validation: score vs {target}",
        "The validation rows: the ranking's score against {target}, coloured by the half used to choose "
        "the layer and the half held out to test it. The held-out \u03c1 is the honest estimate.",
    ),
}


def primary_target(val: dict | None) -> str:
    """The target the validation figures and tables follow: validate.json's primary_target, else grad_norm."""
    return (val or {}).get("primary_target") or "grad_norm"


def prompt_text(value) -> str:
    """The question a row shows: the last user message of a conversation, else the value as text;
    whitespace collapsed, cut to ``EXCERPT`` characters."""
    if isinstance(value, list):
        users = [m.get("content") or "" for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else ""
    text = " ".join(str("" if value is None else value).split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "\u2026"


def _table_cell(x, digits: int = 4) -> str:
    """Floats with ``digits`` decimals (so table columns align), very large or small ones in
    ``g`` format; integers with thousands separators."""
    if x is None:
        return "\u2013"
    if isinstance(x, float):
        if x != x:
            return "NaN"
        return f"{x:.{digits}f}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.{digits}g}"
    return f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else str(x)


def _table(header: list[str], rows: list[list], cls: str = "", digits: int = 4) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for v in row:
            num = isinstance(v, int | float) and not isinstance(v, bool)
            cells.append(
                f'<td class="num">{html.escape(_table_cell(v, digits))}</td>'
                if num
                else f"<td>{html.escape(_table_cell(v))}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="table-wrap">{table}</div>'


def _kv(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_table_cell(v))}</td></tr>" for k, v in pairs
    )
    return f'<div class="table-wrap"><table class="kv"><tbody>{rows}</tbody></table></div>'


def _ends_table(frame: pl.DataFrame, field_name: str | None) -> str:
    header = [c for c in frame.columns if c != field_name] + (
        ["prompt"] if field_name in frame.columns else []
    )
    rows = []
    for row in frame.iter_rows(named=True):
        cells = [str(row[c]) if c == "uid" else row[c] for c in frame.columns if c != field_name]
        rows.append(cells + ([prompt_text(row[field_name])] if field_name in frame.columns else []))
    return _table(header, rows, "prompts")


def _figure_html(path: Path, title: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    stem = html.escape(path.stem, quote=True)
    return (
        f'<section id="sec-{stem}"><h2>{html.escape(title)}</h2><figure>'
        f'<img id="{stem}" alt="{stem}" src="data:image/png;base64,{data}"><figcaption>'
        f"<code>{html.escape(path.name)}</code>: {html.escape(caption)}</figcaption></figure></section>"
    )


def _validate_html(val: dict) -> str:
    rec, split = val.get("recommendation"), val.get("split") or {}
    target = primary_target(val)
    described = (val.get("targets") or {}).get(target)
    pairs: list[tuple[str, object]] = [("primary target", target + (f": {described}" if described else ""))]
    if rec:
        flags = f"--metric {rec.get('metric')} --rank-layer {rec.get('layer')}"
        flags += f" --w-intra {rec.get('w_intra')} --w-inter {rec.get('w_inter')}"
        pairs.append(("recommendation", flags))
    else:
        pairs.append(("recommendation", "none"))
    if split:
        lo, hi = split.get("hold_out_ci") or [None, None]
        held = f"{_table_cell(split.get('hold_out_rho'), 3)} [{_table_cell(lo, 3)}, {_table_cell(hi, 3)}]"
        pairs += [
            (
                "chosen on first half",
                f"{split.get('chosen_feature')} (\u03c1 {_table_cell(split.get('choose_rho'), 3)})",
            ),
            ("held-out \u03c1 [95% CI]", held),
            ("holds on held-out half", "yes" if split.get("holds") else "no"),
        ]
    out = ['<section id="validate"><h2>Validation (<code>anglecurate validate</code>)</h2>', _kv(pairs)]
    if val.get("why"):
        out.append(f'<p class="why">{html.escape(str(val["why"]))}</p>')
    whole = [r for r in val.get("correlations", []) if r.get("target") == target and r.get("layer") is None]
    if whole:
        keys = ("feature", "rho", "ci_low", "ci_high", "p_fwer", "partial_rho", "n")
        out.append("<h3>Whole-score correlations</h3>")
        out.append(
            _table(
                ["feature", "\u03c1", "CI low", "CI high", "p (FWER)", "partial \u03c1", "n"],
                [[r.get(k) for k in keys] for r in whole],
                digits=3,
            )
        )
    if val.get("confounds"):
        keys = ("feature", "covariate", "rho", "ci_low", "ci_high", "n")
        out.append(
            '<h3>Confounds</h3><p class="note">Spearman \u03c1 of a feature with a covariate that could '
            "explain it: a large value means the feature partly measures that covariate.</p>"
        )
        out.append(
            _table(
                ["feature", "covariate", "\u03c1", "CI low", "CI high", "n"],
                [[r.get(k) for k in keys] for r in val["confounds"]],
                digits=3,
            )
        )
    return "".join(out) + "</section>"


def render(
    manifest,
    info,
    rows,
    score,
    drawn,
    captions,
    validate,
    top,
    bottom,
    ranking: Path,
    pilot=None,
    calibration=None,
) -> str:
    """The whole page: the calibration section first when ``calibration`` (calibrate.json) is
    given, then ``drawn`` figures (titles and captions from ``captions``, by file stem) in
    their order, the validation section when ``validate`` (validate.json) is given, the pilot
    section last when ``pilot`` (pilot.json) is."""
    run, rk, counts = manifest.get("run", {}), manifest.get("ranking", {}), manifest.get("counts", {})
    dataset = run.get("dataset", {})
    skipped = counts.get("skipped", 0)
    if isinstance(skipped, dict):
        detail = ", ".join(f"{k} {v:,}" for k, v in skipped.items())
        skipped = f"{sum(skipped.values()):,}" + (f" ({detail})" if detail else "")
    nan = int((~np.isfinite(score)).sum())
    field_name = dataset.get("field")
    count_text = ", ".join(
        f"{k.replace('_', ' ')} {_table_cell(skipped if k == 'skipped' else counts.get(k))}"
        for k in ("scored", "skipped", "truncated", "undefined_score")
    )
    summary = _kv(
        [
            ("model", run.get("model", {}).get("path")),
            ("dataset", f"{dataset.get('path')} (field {field_name})"),
            ("ranked rows", rows),
            ("score", info.title()),
            ("length control", "on" if rk.get("length_control") else "off"),
            ("NaN scores", f"{nan:,} (placed {rk.get('nan_policy', 'last')})"),
            ("counts", count_text),
            (
                "written",
                f"{manifest.get('created', '?')} by anglecurate {manifest.get('anglecurate_version', '?')}",
            ),
        ]
    )
    own = [p for p in drawn if not p.stem.startswith("validate_") and p.stem not in ("pilot", "calibration")]
    links = [("calibration", "Calibration")] if calibration is not None else []
    links += [(f"sec-{p.stem}", captions[p.stem][0]) for p in own]
    links += [("prompts", "Top and bottom prompts")] + ([("validate", "Validation")] if validate else [])
    links += [("pilot", "Pilot")] if pilot is not None else []
    nav = " \u00b7 ".join(f'<a href="#{html.escape(a)}">{html.escape(t)}</a>' for a, t in links)
    figs = {p.stem: _figure_html(p, *captions[p.stem]) for p in drawn}
    ends = (
        f'<section id="prompts"><h2>Top and bottom prompts</h2><p class="note">The {ENDS} highest- and '
        f"lowest-ranked rows with a finite score ({nan:,} NaN rows left out). The prompt is the <code>"
        f"{html.escape(str(field_name))}</code> column (a conversation shows its last user message).</p>"
        f"<h3>Top {ENDS}</h3>{_ends_table(top, field_name)}"
        f"<h3>Bottom {ENDS}</h3>{_ends_table(bottom, field_name)}</section>"
    )
    written = datetime.now(UTC).isoformat(timespec="seconds")
    body = [
        "<h1>anglecurate ranking report</h1>",
        f'<p class="sub">{html.escape(str(ranking))} \u00b7 report written {written}</p>',
        summary,
        f"<nav>{nav}</nav>",
        *([calibration_html(calibration, figs.get("calibration"))] if calibration is not None else []),
        *(figs[p.stem] for p in own),
        ends,
    ]
    if validate is not None:
        body += [_validate_html(validate), *(v for k, v in figs.items() if k.startswith("validate_"))]
    if pilot is not None:
        body.append(pilot_html(pilot, figs.get("pilot")))
    title = html.escape(f"anglecurate report: {Path(str(dataset.get('path', ranking))).name}")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


# Readable from a phone to a wide screen: the column is at most 1,120 px; a table wraps its
# text cells (long paths and prompts break anywhere) and scrolls inside its own box when its
# numbers still do not fit; figures scale down to the column, never up (see
# reporting/plotting.py for how their type is sized for that); narrow windows get less padding.
CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 36px 64px; background: #fff; min-height: 100vh; }
h1 { font-size: 1.7em; margin: 0 0 .1em; }
h2 { font-size: 1.25em; margin: 2.2em 0 .6em; padding-bottom: .25em; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 1.05em; margin: 1.4em 0 .4em; }
.sub, .note { color: #57606a; font-size: .9em; overflow-wrap: anywhere; }
.why { background: #f6f8fa; border-left: 3px solid #5e3c99; padding: .6em 1em; }
nav { margin: 1.4em 0; font-size: .92em; }
a { color: #0969da; text-decoration: none; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: .4em 0; }
table { border-collapse: collapse; font-size: .88em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eaeef2; text-align: left; vertical-align: top; }
.kv td, .prompts td:last-child { overflow-wrap: anywhere; }
thead th { background: #f6f8fa; border-bottom: 1px solid #d0d7de; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.kv th { color: #57606a; font-weight: 600; white-space: nowrap; width: 11em; }
.prompts td:last-child { min-width: 24ch; }
figure { margin: .6em 0; }
img { display: block; max-width: 100%; height: auto; }
figcaption { color: #57606a; font-size: .88em; max-width: 95ch; }
code { font-size: .92em; background: #f6f8fa; padding: 0 .25em; border-radius: 3px; overflow-wrap: anywhere; }
@media (max-width: 900px) {
  body { font-size: 14px; }
  main { padding: 16px 14px 48px; }
  th, td { padding: 3px 6px; }
  .kv th { width: auto; white-space: normal; }
}
"""
