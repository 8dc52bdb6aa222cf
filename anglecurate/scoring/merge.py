"""The end of a scoring run: the global ranking and manifest, for one process or for the
shards of a sharded run (each writes a marker; the last to finish, or `anglecurate merge`,
ranks every shard's chunk files together exactly as a single run ranks its own)."""

from __future__ import annotations

import sys
from pathlib import Path

from anglecurate.base.errors import UserError
from anglecurate.data.shard import Shard
from anglecurate.scoring.embeddings import write_embeddings
from anglecurate.scoring.manifest import build_manifest, changed_keys
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.result import ScoreResult, run_timing
from anglecurate.scoring.store import (
    EMBEDDINGS,
    SKIPPED,
    UNDEFINED,
    MergeInProgress,
    OutputDir,
    RankingSummary,
)
from anglecurate.storage.faults import storage_errors


def complete(
    out: OutputDir, shard: Shard, run: dict, columns: list[str], timing: dict, device: dict, resumed: int
) -> ScoreResult:
    """After this process's chunks: rank (unsharded), or mark the shard done and merge when
    it was the last one."""
    if shard.whole:
        return _finish(out, run, columns, timing, device, resumed)
    marker = {"run": run, "timing": timing, "device": device, "columns": columns}
    out.write_shard_marker(shard.tag, marker)
    waiting, _ = shard_status(out, run)
    if waiting:
        return ScoreResult(str(out.root), "shard complete", {}, resumed, extra={"missing_shards": waiting})
    try:
        return merge(out.root, resumed=resumed)
    except MergeInProgress:  # the other shard that finished at the same moment merges (a live
        # process: a lock left by a killed merger is taken over, so a rerun of this shard merges)
        return ScoreResult(str(out.root), "shard complete", {}, resumed, extra={"missing_shards": []})


def _finish(
    out: OutputDir, run: dict, columns: list[str], timing: dict, device: dict, resumed: int
) -> ScoreResult:
    """Build the global ranking from every chunk file and write the manifest."""
    choice = RankChoice.from_dict(run["ranking"])
    chunks = out.chunk_files()
    files = [path for _, path in sorted(chunks.items())]
    stage = out.work / "finalize"
    ranking = out.build_ranking(files, choice, run["layers"], columns, run["shard_rows"], stage)
    outputs = outputs_of(ranking)
    if run.get("embed") is not None:  # absent key: a run without --embed, as before it existed
        with storage_errors(stage):
            outputs["embeddings"] = write_embeddings(chunks, stage / EMBEDDINGS, run["embed"]["layer"])
    manifest = build_manifest(run, ranking_info(choice, ranking), device, timing, counts_of(ranking), outputs)
    out.commit(stage, manifest, replaces_skipped=True, files=(EMBEDDINGS,) if "embeddings" in outputs else ())
    warn_undefined(choice, ranking)
    return ScoreResult(str(out.root), "complete", manifest, chunks_resumed=resumed)


def ranking_info(choice: RankChoice, ranking: RankingSummary) -> dict:
    """The manifest's ``ranking``: the choice, what orders the rows and which way (said even
    for the default, the score highest first), its NaN count and the length fit."""
    order = {"by": choice.by, "ascending": choice.lowest_first}
    found = {"undefined_score": ranking.undefined_score, "length_fit": ranking.length_fit}
    return {**choice.to_dict(), **order, **found}


def counts_of(ranking: RankingSummary, skipped: dict | None = None) -> dict:
    return {
        "scored": ranking.scored,
        "skipped": ranking.skipped if skipped is None else skipped,
        "truncated": ranking.truncated,
        "undefined_score": ranking.undefined_score,
        "dropped": ranking.dropped,
    }


def outputs_of(ranking: RankingSummary) -> dict:
    return {
        "ranked": ranking.parts,
        "skipped": SKIPPED if ranking.skipped else None,
        "undefined": UNDEFINED if ranking.dropped else None,
    }


def warn_undefined(choice: RankChoice, ranking: RankingSummary) -> None:
    """The authors' value is NaN on most short prompts: say so, and what happened to them."""
    if ranking.undefined_score and choice.metric == "gainrl-reference":
        where = {"last": "ranked last", "first": "ranked first", "drop": f"left out, in {UNDEFINED}"}
        print(
            f"warning: the score is NaN for {ranking.undefined_score} of {ranking.scored} rows "
            f"({where[choice.nan_policy]}, --nan-policy {choice.nan_policy})",
            file=sys.stderr,
        )


def shard_status(out: OutputDir, run: dict) -> tuple[list[str], dict[str, dict]]:
    """Missing shards (as ``i/N``) of a sharded run in ``out``, and the finished shards'
    markers by tag; refuses foreign markers."""
    markers = out.shard_markers()
    count = run["shards"]
    expected = {Shard(i, count).tag for i in range(count)}
    for tag, marker in markers.items():
        if tag not in expected or changed_keys(marker["run"], run):
            raise UserError(
                f"{out.shard_dir / (tag + '.json')} is from another run (different shards, model or "
                "options); remove it and rerun that shard with the same options"
            )
    missing = sorted(expected - set(markers), key=lambda t: int(t[1:].split("of")[0]))
    return [t[1:].replace("of", "/") for t in missing], markers


def merge(folder: str | Path, resumed: int = 0) -> ScoreResult:
    """Build the global ranking and manifest of a sharded run once every shard finished;
    ``resumed`` is reported as the calling shard's resumed chunk count."""
    out = OutputDir(folder)
    manifest = out.read_manifest()
    if manifest is not None:
        return ScoreResult(str(out.root), "already complete", manifest)
    run = out.previous_run()
    if run is None:
        raise UserError(
            f"{out.root} holds no scoring run; run `anglecurate score --shard i/N --out {out.root}`"
        )
    if run.get("shards", 1) == 1:
        raise UserError(f"{out.root} is an unsharded run; rerun its `anglecurate score` command to finish it")
    missing, markers = shard_status(out, run)
    if missing:
        raise UserError(
            f"cannot merge {out.root}: shards {', '.join(missing)} of {run['shards']} are not "
            "finished; run (or resume) them with `anglecurate score ... --shard i/N`"
        )
    with out.ranking_lock():
        manifest = out.read_manifest()  # another merger committed since the check above
        if manifest is not None:
            return ScoreResult(str(out.root), "already complete", manifest)
        timing = _sum_timing([m["timing"] for m in markers.values()])
        columns = next(iter(markers.values()))["columns"]
        devices = [m["device"] for _, m in sorted(markers.items())]
        return _finish(out, run, columns, timing, {**devices[0], "shards": devices}, resumed)


def _sum_timing(timings: list[dict]) -> dict:
    """Shards ran side by side: rows and tokens add up, wall time is the slowest shard's."""
    wall = max(t["wall_s"] for t in timings)
    rows = sum(t["rows_this_run"] for t in timings)
    tokens = sum(t["tokens_this_run"] for t in timings)
    return {**run_timing(wall, rows, tokens), "shards": len(timings)}
