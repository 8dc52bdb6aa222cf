"""Terminal views: a prompt's tokens coloured by segment, the top and bottom of a ranking,
and the run summary. Presentation only; the data comes from the library."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from anglecurate.scoring.ranking import COMPUTED, RankChoice
from anglecurate.scoring.segments import Segmented

SEGMENT_STYLES = {"prefix": "bold blue", "question": "bold green", "suffix": "bold magenta"}


def token_view(tokenizer, seg: Segmented) -> Text:
    """Each token decoded on its own, alternating shades so boundaries show."""
    text = Text()
    bounds = [
        ("prefix", 0, seg.n_prefix),
        ("question", seg.n_prefix, seg.n_prefix + seg.n_question),
        ("suffix", seg.n_prefix + seg.n_question, seg.n_tokens),
    ]
    for name, lo, hi in bounds:
        for k, token_id in enumerate(seg.input_ids[lo:hi]):
            piece = tokenizer.decode([token_id]).replace("\n", "\u21b5\n")
            style = SEGMENT_STYLES[name] + (" on grey23" if k % 2 else "")
            text.append(piece, style=style)
    return text


def print_inspect(console: Console, tokenizer, seg: Segmented, uid) -> None:
    console.print(token_view(tokenizer, seg))
    console.print()
    legend = Text("uid ")
    legend.append(str(uid), style="bold")
    for name, n in (("prefix", seg.n_prefix), ("question", seg.n_question), ("suffix", seg.n_suffix)):
        legend.append("  ")
        legend.append(f"{name} {n}", style=SEGMENT_STYLES[name])
    legend.append(f"  total {seg.n_tokens} tokens")
    console.print(legend)


def _excerpt(value, width: int = 90) -> str:
    if isinstance(value, list):  # chat messages: show the last user turn
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else ""
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def read_ranking_ends(out: Path, n: int) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    """The manifest and the first and last ``n`` ranked rows, reading only what is needed."""
    from anglecurate.scoring.store import OutputDir

    manifest, parts = OutputDir(out).ranked_parts()
    if not parts:
        return manifest, pl.DataFrame(), pl.DataFrame()
    field = manifest["run"]["dataset"]["field"]
    columns = ["rank", "uid", "score", "score_length_controlled", "c_intra", "c_inter", "n_question", field]
    by = RankChoice.from_dict(manifest["ranking"]).by
    columns += [by] if by not in (*columns, *COMPUTED) else []  # a stored column orders the rows
    lazy = pl.scan_parquet(parts).select(columns)
    return manifest, lazy.head(n).collect(), lazy.tail(n).collect()


def print_ranking_ends(console: Console, out: Path, n: int) -> None:
    manifest, top, bottom = read_ranking_ends(out, n)
    field = manifest["run"]["dataset"]["field"]
    choice = RankChoice.from_dict(manifest["ranking"])
    # With length control the rank follows the residual: show it beside the raw score; a
    # stored column that orders the rows is shown too.
    extra = ["score_lc"] if choice.length_control and choice.by == "score" else []
    by = [choice.by] if choice.by in top.columns and choice.by not in (*COMPUTED, "n_question") else []
    for title, frame in ((f"top {n}", top), (f"bottom {n}", bottom)):
        table = Table(title=f"{title}: {choice.describe()}", title_justify="left")
        for col in ("rank", "uid", *by, "score", *extra, "c_intra", "c_inter", "n_q"):
            table.add_column(col, no_wrap=True)
        table.add_column("question", ratio=1, min_width=30)
        for row in frame.iter_rows(named=True):
            lc = [_four_places(row["score_length_controlled"])] if extra else []
            table.add_row(
                str(row["rank"]),
                str(row["uid"]),
                *[_four_places(row[c]) for c in by],
                _four_places(row["score"]),
                *lc,
                _four_places(row["c_intra"]),
                _four_places(row["c_inter"]),
                str(row["n_question"]),
                _excerpt(row[field]),
            )
        console.print(table)


def _four_places(x) -> str:
    return "nan" if x is None or x != x else f"{x:.4f}" if abs(x) < 10 else f"{x:.3g}"


def print_summary(console: Console, summary: dict) -> None:
    skipped = summary["skipped"]
    skipped_text = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"
    timing = summary["timing"]
    lines = [
        f"[bold green]{summary['status']}[/]: {summary['out']}",
        f"rows {summary['rows']:,}  scored {summary['scored']:,}  skipped {skipped_text}  "
        f"truncated {summary['truncated']:,}  undefined score {summary['undefined_score']:,}"
        + (f" (left out: {summary['dropped']:,})" if summary.get("dropped") else ""),
        f"ranked by {summary['ranking']}"
        + (f"  (layers scored: {summary['layers']})" if summary.get("layers") else ""),
    ]
    if summary.get("scored_part"):
        lines.append(f"scored: {summary['scored_part']}")
    if summary.get("attention"):
        lines.append(f"attention: {summary['attention']}")
    if summary["status"] == "complete" and timing.get("tokens_per_s"):
        lines.append(
            f"{timing['rows_this_run']:,} rows in {timing['wall_s']:.1f} s  "
            f"({timing['tokens_per_s']:,.0f} tokens/s)"
            + (f"  resumed {summary['chunks_resumed']} chunks" if summary["chunks_resumed"] else "")
        )
    for line in lines:
        console.print(line)


def print_validation(console: Console, report: dict) -> None:
    """validate's findings, in the order a user should read them: the RL pass rate (a
    target with no reward variance carries no signal), proxies, then the correlations,
    then whether the best pick survived the hold-out half."""
    sample, target = report["sample"], report["primary_target"]
    console.print(
        f"[bold]validate[/]: {sample['n']} of {sample['of']:,} ranked rows (seed {sample['seed']}); "
        f"target {target}: {report['targets'][target]}"
    )
    if "rl" in report:
        rl = report["rl"]
        console.print(
            f"RL target: mean pass rate {rl['mean_pass_rate']:.3f} over {rl['samples']} samples per prompt; "
            f"pass-rate groups {rl['pass_rate_histogram']}; {rl['zero_variance_groups']} of {sample['n']} "
            "groups have equal rewards, so GRPO takes no step on them"
        )
    proxies = Table(title="is the score a proxy? Spearman with", title_justify="left")
    covariates = list(dict.fromkeys(c["covariate"] for c in report["confounds"]))
    proxies.add_column("feature")
    for cov in covariates:
        proxies.add_column(cov, justify="right")
    shown = ["score", "score_length_controlled", "gainrl_reference", report["split"].get("chosen_feature")]
    by_feature: dict[str, dict] = {}
    for c in report["confounds"]:
        by_feature.setdefault(c["feature"], {})[c["covariate"]] = c
    for name in dict.fromkeys(n for n in shown if n in by_feature):
        proxies.add_row(name, *(_interval(by_feature[name][cov]) for cov in covariates))
    for c in report["target_confounds"]:
        if c["target"] == target:
            proxies.caption = (
                proxies.caption or f"{target} itself:"
            ) + f"  {c['covariate']} {_four_places(c['rho'])}"
    console.print(proxies)

    rows = report["correlations"]
    # Strongest among features defined on most of the sample: a rho on a handful of rows
    # (the authors' value is NaN on most short prompts) is noise, shown only with its n.
    full = [r for r in rows if r["rho"] is not None and r["n"] >= sample["n"] / 2]
    top = sorted(full, key=lambda r: -abs(r["rho"]))[:10]
    top += [r for r in rows if r["feature"] in ("score", "gainrl_reference") and r not in top]
    title = f"features against {target} (strongest 10, and the current score)"
    table = Table(title=title, title_justify="left")
    for col in ("feature", "rho [95% CI]", "partial rho", "p (family-wise)", "n"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    for r in top:
        table.add_row(
            r["feature"], _interval(r), _four_places(r["partial_rho"]), _four_places(r["p_fwer"]), str(r["n"])
        )
    table.caption = f"partial rho controls for {', '.join(rows[0]['controls'])}" if rows else None
    console.print(table)

    split = report["split"]
    verdict = "[bold green]holds[/]" if split["holds"] else "[bold yellow]does not hold[/]"
    console.print(f"choose / hold-out: {verdict}. {report['why']}")


def _interval(r: dict) -> str:
    return f"{_four_places(r['rho'])} [{_four_places(r['ci_low'])}, {_four_places(r['ci_high'])}]"


def calibration_lines(summary: dict) -> list[str]:
    """What `calibrate` says when it is done (calibrate.json in): what was measured, the
    predictor's held-out quality against the baselines, whether it is recommended, the
    cost, and, last, how to rank by it."""
    m, fit = summary["measured"], summary["fit"]
    root = summary["ranking"]
    lines = [
        f"measured {m['rows']:,} prompts x {summary['options']['samples_per_prompt']}: mean pass rate "
        f"{m['mean_pass_rate']:.3f}; {m['zero_variance_groups']:,} groups with no reward variance "
        f"({m['all_failed']:,} all failed, {m['all_passed']:,} all passed)"
    ]

    def interval(q: dict, name: str) -> str:
        value, (lo, hi) = q[name], q[f"{name}_ci"]
        show = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
        return f"{show(value)} [{show(lo)}, {show(hi)}]"

    for name, q in fit["quality"].items():
        lines.append(
            f"  {name:<12} held-out Spearman {interval(q, 'spearman')}, AUROC (has variance) "
            f"{interval(q, 'auroc_variance')}".replace("+0.", "0.").replace("[+", "[")
        )
    if fit["recommended"]:
        lines.append(f"the predictor is recommended: its held-out Spearman is above {fit['reference']}'s")
    else:
        lines.append(f"the predictor is not recommended: {fit['reason']}; p_pass is written all the same")
    from anglecurate.calibration.cost import summary_line

    lines.append(summary_line(summary["cost"]["recorded"]))
    lines.append(
        f"wrote {root}/calibrate.json and calibrate.parquet; p_pass and learnability added to every "
        "ranked row (the order is unchanged)"
    )
    lines.append(
        f"next: anglecurate rank {root} --by p_pass (easiest first), or --by learnability "
        "(most reward variance first)"
    )
    return lines
