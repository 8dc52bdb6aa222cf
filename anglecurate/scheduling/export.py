"""Trainer exports of a schedule: the original rows, in the order each trainer should see them.

Files written into the schedule folder ``S`` (each atomically, all rewritten after every
``update`` so they always match ``schedule.parquet``):

    S/rows.parquet                 every ranked row once, in rank order (trl, verl): the
                                   closed-loop samplers index into it by ``uid``
    S/trl.parquet                  (trl) the schedule flattened: epoch 0's rows in feed order,
                                   then epoch 1's, ... for ``GRPOConfig(shuffle_dataset=False)``
    S/openrlhf/epoch-NNNNN.jsonl   (openrlhf) one file per epoch: OpenRLHF shuffles whatever it
                                   is given, so each GAIN-RL epoch is one training stage
    S/ordered/train.jsonl          (ordered) the flattened schedule as JSONL, for trainers whose
    S/ordered-epochs.json          curriculum is the data order with shuffling off (NeMo-RL,
                                   axolotl, ms-swift, Trinity-RFT's sequential reader), and
                                   where each epoch starts
    S/adarft.parquet               (adarft) every ranked row once, with AdaRFT's
                                   ``extra_info.difficulty``: 0 (easiest) to 100 (hardest)
    S/trinity/train.parquet        (trinity) every ranked row once, with ``gainrl_easiness`` for
                                   Trinity-RFT's offline_easy2hard selector: 1 (easiest) to 0

Easy is GAIN-RL's learned-first end: rank 0, the highest angle concentration. The difficulty
fields are the rank's place in the list, so they keep the ranking's order exactly (no ties).

Every file keeps every original column unchanged and adds ``uid`` and ``rank`` (and
``epoch``, ``position`` in the flattened ones). When the data has no ``prompt`` column, a
``prompt`` column is added holding the conversation exactly as it was scored (the prompt
config's system prompt and shots, then the question) as ``{role, content}`` messages, the
conversational format that TRL, verl and OpenRLHF (``--data.apply_chat_template``) read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scoring.prompt import PromptConfig, build_conversation
from anglecurate.scoring.store import SCORE_COLUMNS, OutputDir
from anglecurate.storage.atomic import atomic_write, atomic_write_json, atomic_write_parquet

ROWS_FILE = "rows.parquet"
TRL_FILE = "trl.parquet"
OPENRLHF_DIR = "openrlhf"
ORDERED_FILE = Path("ordered") / "train.jsonl"
ORDERED_EPOCHS_FILE = "ordered-epochs.json"
ADARFT_FILE = "adarft.parquet"
TRINITY_FILE = Path("trinity") / "train.parquet"
PROMPT_COLUMN = "prompt"
EASINESS_COLUMN = "gainrl_easiness"


def ranked_rows(ranking_path: Path) -> pl.DataFrame:
    """Every ranked row in rank order: ``uid``, ``rank``, a ``prompt``, the original columns."""
    manifest, parts = OutputDir(ranking_path).ranked_parts()
    run = manifest["run"]
    frame = pl.read_parquet(parts)
    original = [c for c in frame.columns if c not in SCORE_COLUMNS]
    rows = frame.select("uid", "rank", *original).sort("rank")
    if PROMPT_COLUMN not in rows.columns:
        config = PromptConfig.from_dict(run["prompt"])
        field = run["dataset"]["field"]
        prompts = [build_conversation(value, config)[0] for value in rows[field].to_list()]
        rows = rows.insert_column(2, pl.Series(PROMPT_COLUMN, prompts))
    return rows


def _as_messages(value) -> list[dict] | None:
    """A ``prompt`` value as the trainers read it: a string is one user turn."""
    if isinstance(value, str):
        return [{"role": "user", "content": value.strip()}]
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value):
        return [{"role": m.get("role"), "content": str(m.get("content", "")).strip()} for m in value]
    return None


def prompt_mismatch(ranking_path: Path) -> str | None:
    """One line when the data's own ``prompt`` column, which the exports keep and the trainers
    read, is not the conversation that was scored (another system prompt, no worked
    example): the ranking then describes prompts the policy never sees. None when they
    agree, or when the data has no ``prompt`` column (the exports add the scored one)."""
    manifest, parts = OutputDir(ranking_path).ranked_parts()
    run = manifest["run"]
    field = run["dataset"]["field"]
    columns = pl.read_parquet_schema(parts[0]) if parts else {}
    if PROMPT_COLUMN not in columns or field == PROMPT_COLUMN and run["prompt"]["name"] == "none":
        return None
    frame = pl.read_parquet(parts, columns=list(dict.fromkeys([field, PROMPT_COLUMN])))
    config = PromptConfig.from_dict(run["prompt"])
    differ = 0
    for value, prompt in zip(frame[field].to_list(), frame[PROMPT_COLUMN].to_list(), strict=True):
        try:
            scored = _as_messages(build_conversation(value, config)[0])
        except ValueError:  # a row score skipped: not in the ranking's order anyway
            continue
        differ += _as_messages(prompt) != scored
    if not differ:
        return None
    return (
        f"{differ} of {frame.height} rows' '{PROMPT_COLUMN}' column (what the trainers read) differs "
        f"from the conversation scored (--field {field}, --prompt-config {config.name}); score with "
        "the rendering you train in, or drop the column so the exports carry the scored one"
    )


def scheduled_rows(schedule: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """The schedule's examples with their rows: ``epoch``, ``position``, then ``rows``' columns."""
    keys = schedule.select("epoch", "position", "rank")
    joined = keys.join(rows, on="rank", how="left", maintain_order="left")
    return joined.select("epoch", "position", *rows.columns)


def rank_fraction(ranks: pl.Series, rows: int) -> pl.Series:
    """Each rank's place in the list, 0.0 at rank 0 (the highest angle concentration, learned
    first) to 1.0 at the last rank: the one scale every difficulty field below is made from."""
    return ranks.cast(pl.Float64) / max(rows - 1, 1)


def adarft_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with AdaRFT's ``extra_info.difficulty`` (0 to 100, higher = harder) set; any
    other ``extra_info`` fields (verl's ``index``, ``split``, tool arguments) are kept."""
    difficulty = (100.0 * rank_fraction(rows["rank"], rows.height)).to_list()
    if "extra_info" in rows.columns and not isinstance(rows.schema["extra_info"], pl.Struct):
        raise UserError(
            f"the data's extra_info column is {rows.schema['extra_info']}, not a record, so AdaRFT's "
            "extra_info.difficulty cannot be added; rename that column before scoring"
        )
    old = rows["extra_info"].to_list() if "extra_info" in rows.columns else [None] * rows.height
    extra = pl.Series(
        "extra_info", [{**(e or {}), "difficulty": d} for e, d in zip(old, difficulty, strict=True)]
    )
    return rows.with_columns(extra)


def trinity_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with ``gainrl_easiness`` (1 = easiest, 0 = hardest): Trinity-RFT's
    offline_easy2hard selector serves the highest feature value first."""
    return rows.with_columns((1.0 - rank_fraction(rows["rank"], rows.height)).alias(EASINESS_COLUMN))


def ordered_epochs(flat: pl.DataFrame) -> dict:
    """Where each epoch starts in the ordered file (0-based rows), and how many rows it has."""
    counts = flat.group_by("epoch", maintain_order=True).len()
    starts = [0, *counts["len"].cum_sum().to_list()[:-1]]
    epochs = [
        {"epoch": e, "first_row": s, "rows": n}
        for e, s, n in zip(counts["epoch"], starts, counts["len"], strict=True)
    ]
    return {"file": str(ORDERED_FILE), "rows": flat.height, "epochs": epochs}


def write_exports(folder: Path, schedule: pl.DataFrame, ranking, exports: list[str]) -> None:
    """(Re)write the requested exports of ``schedule`` into ``folder``."""
    if not exports:
        return
    rows = ranked_rows(ranking.path)
    adarft = adarft_rows(rows) if "adarft" in exports else None  # before any write: it can refuse
    atomic_write_parquet(rows, folder / ROWS_FILE)
    flat = scheduled_rows(schedule, rows) if {"trl", "openrlhf", "ordered"} & set(exports) else None
    if "trl" in exports:
        atomic_write_parquet(flat, folder / TRL_FILE)
    if "openrlhf" in exports:
        _write_stages(folder / OPENRLHF_DIR, flat)
    if "ordered" in exports:
        (folder / ORDERED_FILE).parent.mkdir(exist_ok=True)
        atomic_write(folder / ORDERED_FILE, flat.write_ndjson)
        atomic_write_json(ordered_epochs(flat), folder / ORDERED_EPOCHS_FILE)
    if "adarft" in exports:
        atomic_write_parquet(adarft, folder / ADARFT_FILE)
    if "trinity" in exports:
        (folder / TRINITY_FILE).parent.mkdir(exist_ok=True)
        atomic_write_parquet(trinity_rows(rows), folder / TRINITY_FILE)


def _write_stages(target: Path, flat: pl.DataFrame) -> None:
    """One JSONL per epoch, built beside ``target`` and swapped in whole."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for epoch in flat.partition_by("epoch", maintain_order=True):
            epoch.write_ndjson(tmp / f"epoch-{epoch['epoch'][0]:05d}.jsonl")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or Ctrl-C: no half-written stages
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
