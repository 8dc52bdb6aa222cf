"""Trainer exports of a schedule: the original rows, in the order each trainer should see them.

Files written into the schedule folder ``S`` (each atomically, all rewritten after every
``update`` so they always match ``schedule.parquet``):

    S/rows.parquet                 every ranked row once, in rank order (trl, verl): the
                                   closed-loop samplers index into it by ``uid``
    S/trl.parquet                  (trl) the schedule flattened: epoch 0's rows in feed order,
                                   then epoch 1's, ... for ``GRPOConfig(shuffle_dataset=False)``
    S/openrlhf/epoch-NNNNN.jsonl   (openrlhf) one file per epoch: OpenRLHF shuffles whatever it
                                   is given, so each GAIN-RL epoch is one training stage

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

from anglecurate.scoring.prompt import PromptConfig, build_conversation
from anglecurate.scoring.store import SCORE_COLUMNS, OutputDir, atomic_write_parquet

ROWS_FILE = "rows.parquet"
TRL_FILE = "trl.parquet"
OPENRLHF_DIR = "openrlhf"
PROMPT_COLUMN = "prompt"


def ranked_rows(ranking_path: Path) -> pl.DataFrame:
    """Every ranked row in rank order: ``uid``, ``rank``, a ``prompt``, the original columns."""
    manifest, parts = OutputDir(ranking_path).ranked_parts()
    run = manifest["run"]
    frame = pl.read_parquet(parts)
    original = [c for c in frame.columns if c not in SCORE_COLUMNS]
    rows = frame.select("uid", "rank", *original).sort("rank")
    if PROMPT_COLUMN not in rows.columns:
        config = PromptConfig(
            name=run["prompt"]["name"],
            system=run["prompt"]["system"],
            shots=tuple(tuple(s) for s in run["prompt"]["shots"]),
        )
        field = run["dataset"]["field"]
        prompts = [build_conversation(value, config)[0] for value in rows[field].to_list()]
        rows = rows.insert_column(2, pl.Series(PROMPT_COLUMN, prompts))
    return rows


def scheduled_rows(schedule: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """The schedule's examples with their rows: ``epoch``, ``position``, then ``rows``' columns."""
    keys = schedule.select("epoch", "position", "rank")
    joined = keys.join(rows, on="rank", how="left", maintain_order="left")
    return joined.select("epoch", "position", *rows.columns)


def write_exports(folder: Path, schedule: pl.DataFrame, ranking, exports: list[str]) -> None:
    """(Re)write the requested exports of ``schedule`` into ``folder``."""
    if not exports:
        return
    rows = ranked_rows(ranking.path)
    atomic_write_parquet(rows, folder / ROWS_FILE)
    flat = scheduled_rows(schedule, rows) if {"trl", "openrlhf"} & set(exports) else None
    if "trl" in exports:
        atomic_write_parquet(flat, folder / TRL_FILE)
    if "openrlhf" in exports:
        _write_stages(folder / OPENRLHF_DIR, flat)


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
