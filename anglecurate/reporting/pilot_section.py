"""The report's pilot section: ``anglecurate pilot``'s verdict, table and figure.

A ranking a pilot scored lives in ``P/ranking``, so the report finds ``P/pilot.json`` beside
it; ``--pilot P`` names a pilot anywhere else (one that trained on this ranking by
``--ranking``). Nothing here trains or recomputes: the section shows what the pilot wrote.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from anglecurate.base.errors import UserError

JSON, PNG = "pilot.json", "pilot.png"


def find_pilot(ranking: Path, pilot: str | Path | None) -> Path | None:
    """The pilot folder to show: ``pilot`` (which must hold a pilot.json), else the ranking's
    parent when the pilot scored it, else None."""
    if pilot is not None:
        folder = Path(pilot)
        if not (folder / JSON).is_file():
            raise UserError(f"--pilot {folder} holds no {JSON}; run `anglecurate pilot --out {folder}` first")
        return folder
    parent = ranking.resolve().parent
    return parent if (parent / JSON).is_file() and ranking.resolve() == (parent / "ranking") else None


def read_pilot(folder: Path) -> dict:
    try:
        return json.loads((folder / JSON).read_text())
    except ValueError as exc:
        raise UserError(f"{folder / JSON} is not valid JSON ({exc}); rerun `anglecurate pilot`") from None


def copy_figure(folder: Path, target: Path) -> Path | None:
    """pilot.png copied into the report folder being built (None when not drawn yet)."""
    if not (folder / PNG).is_file():
        return None
    return Path(shutil.copy2(folder / PNG, target / PNG))


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v, 2) for v in value) + "]"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _to_target(value, learned: bool) -> str:
    """Steps (one decimal) or tokens to the target: "never" when not reached, "n/a" when
    there is no target (uniform learned nothing)."""
    if not learned:
        return "n/a"
    return "never" if value is None else f"{value:,.1f}"


def _speedup(arm: str, ratio, ci) -> str:
    """A speedup cell, "1.23x [0.80, 2.10]"; "baseline" on uniform's own row; one "n/a" when undefined."""
    if arm == "uniform":
        return "baseline"
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f}x" + (f" {_cell(ci)}" if ci else "")


def _cost_cells(cost: dict | None) -> list[str]:
    """An arm's (or the pilot's) generated tokens, wall seconds and uniform runs (pilot.json's
    ``cost``); n/a for a pilot written before the cost was kept."""
    if not cost:
        return ["n/a"] * 3
    runs = (cost.get("in_uniform_runs") or {}).get("wall_seconds")
    return [f"{cost['generated_tokens']:,}", f"{cost['wall_seconds']:,.0f}", _cell(runs, 1)]


def pilot_html(summary: dict, figure_html: str | None) -> str:
    """The section: verdict lines, one table row per arm, then pilot.png."""
    head = [
        "arm",
        "seeds",
        "before",
        "final acc.",
        "best acc.",
        "AUC",
        "zero-variance groups",
        "steps to target",
    ]
    head += ["speedup (steps) [95%]", "speedup (tokens) [95%]"]
    head += ["generated tokens", "wall seconds", "uniform runs (time)"]
    learned = summary.get("baseline_learned", True)
    cost = summary.get("cost") or {}
    rows = []
    for arm, entry in summary.get("arms", {}).items():
        cells = [
            arm,
            len(entry.get("seeds", [])),
            entry.get("initial_accuracy"),
            entry.get("final_accuracy"),
            entry.get("best_accuracy"),
            entry.get("auc"),
            entry.get("zero_variance"),
            _to_target(entry.get("steps_to_target"), learned),
            _speedup(arm, entry.get("speedup_steps"), entry.get("speedup_steps_ci95")),
            _speedup(arm, entry.get("speedup_tokens"), entry.get("speedup_tokens_ci95")),
            *_cost_cells(cost.get("arms", {}).get(arm)),
        ]
        rows.append(  # every cell but the arm's is a number, kept on one line
            "<tr>"
            + "".join(
                f"<td>{html.escape(c)}</td>" if k == 0 else f'<td class="num">{_cell(c)}</td>'
                for k, c in enumerate(cells)
            )
            + "</tr>"
        )
    table = (
        '<div class="table-wrap"><table><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    verdict = "".join(f"<li>{html.escape(line)}</li>" for line in summary.get("verdict", []))
    runs = f"{summary.get('runs_finished', '?')} of {summary.get('runs_planned', '?')} runs finished"
    target = summary.get("target_accuracy")
    if learned:
        about = (
            f"target = uniform's final held-out accuracy ({_cell(target)}); a speedup is uniform's steps "
            "(tokens) to the target over the arm's; never: the arm's mean curve did not reach it"
        )
    else:
        about = (
            f"uniform learned nothing (held-out accuracy {_cell(target)} at the end, no higher than "
            "before training), so there is no target: no steps to it and no speedups (n/a)"
        )
    about += (
        "; zero-variance groups: the share of GRPO groups whose rewards did not vary (no "
        "gradient), over the run; cost: tokens generated for training and evaluation (and an "
        "arm's calibration, once), and their wall seconds, summed over the arm's seeds; uniform "
        "runs: that time over one uniform run's"
    )
    note = f'<p class="note">{html.escape(runs)}; {html.escape(about)}.</p>'
    if cost.get("summary"):
        note += f'<p class="note">{html.escape(cost["summary"])}</p>'
    return (
        '<section id="pilot"><h2>Pilot (<code>anglecurate pilot</code>)</h2>'
        f"{note}<ul>{verdict}</ul>{table}{figure_html or ''}</section>"
    )
