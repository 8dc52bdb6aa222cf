"""The end of a scoring run: the global ranking and manifest, for one process or for the
shards of a sharded run (each writes a marker; the last to finish, or `anglecurate merge`,
ranks every shard's chunk files together exactly as a single run ranks its own)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from anglecurate.errors import UserError
from anglecurate.lock import exclusive_writer
from anglecurate.manifest import build_manifest, same_run
from anglecurate.scale.shard import Shard
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.store import (
    SCORE_COLUMNS,
    SKIPPED,
    UNDEFINED,
    MergeInProgress,
    OutputDir,
    RankingSummary,
)


@dataclass
class ScoreResult:
    """What a run did, for the CLI summary and ``--json``."""

    out: str
    status: str  # "complete", "already complete", "re-ranked" or "shard complete"
    manifest: dict
    chunks_resumed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.out)

    @property
    def counts(self) -> dict:
        """scored, skipped (by reason), truncated, undefined_score, dropped."""
        return self.manifest.get("counts", {})

    @property
    def timing(self) -> dict:
        """wall_s, rows and tokens of this run, and their rates."""
        return self.manifest.get("timing", {})

    def summary(self) -> dict:
        m = self.manifest
        return {
            "out": self.out,
            "status": self.status,
            "rows": m["run"]["dataset"]["rows"],
            **m["counts"],
            "ranking": RankChoice.from_dict(m["ranking"]).describe(),
            "timing": m["timing"],
            "chunks_resumed": self.chunks_resumed,
            "parts": [p["file"] for p in m["outputs"]["ranked"]],
            "layers": _layer_list(m["run"]["layers"], m["run"]["model"]["num_layers"]),
            "attention": m.get("device", {}).get("attn_implementation"),
            "scored_part": m.get("device", {}).get("scored"),
        }


def _layer_list(layers: list[int], num_layers: int) -> str:
    """``all 24`` when every layer was scored, else the indices."""
    return f"all {num_layers}" if layers == list(range(num_layers)) else ", ".join(map(str, layers))


def run_timing(wall: float, rows: int, tokens: int) -> dict:
    return {
        "wall_s": round(wall, 3),
        "rows_this_run": rows,
        "tokens_this_run": tokens,
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "rows_per_s": round(rows / wall, 2) if wall > 0 else None,
    }


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
    except MergeInProgress:  # the other shard that finished at the same moment merges
        return ScoreResult(str(out.root), "shard complete", {}, resumed, extra={"missing_shards": []})


def _finish(
    out: OutputDir, run: dict, columns: list[str], timing: dict, device: dict, resumed: int
) -> ScoreResult:
    """Build the global ranking from every chunk file and write the manifest."""
    choice = RankChoice.from_dict(run["ranking"])
    files = [path for _, path in sorted(out.chunk_files().items())]
    stage = out.work / "finalize"
    ranking = out.build_ranking(files, choice, run["layers"], columns, run["shard_rows"], stage)
    manifest = build_manifest(
        run, _ranking_info(choice, ranking), device, timing, _counts(ranking), _outputs(ranking)
    )
    out.commit(stage, manifest, replaces_skipped=True)
    _warn_undefined(choice, ranking)
    return ScoreResult(str(out.root), "complete", manifest, chunks_resumed=resumed)


def rerank(folder: str | Path, choice: RankChoice) -> ScoreResult:
    """Rank a finished run again by ``choice`` from its stored per-layer values, without the
    model; the new ranked parts and manifest replace the old ones atomically."""
    out = OutputDir(folder)
    with exclusive_writer(out.root, create=False):
        return _rerank(out, choice)


def _rerank(out: OutputDir, choice: RankChoice) -> ScoreResult:
    manifest, parts = out.ranked_parts()
    run = manifest["run"]
    choice.validate()
    if choice.metric == "gainrl-reference" and run.get("reference") is None:
        raise UserError(
            f"{out.root} was scored without the authors' value; rescore with "
            "`anglecurate score ... --metric gainrl-reference` (it needs every token's hidden state)"
        )
    choice = choice.resolved(run["layers"], run["model"]["num_layers"], "--layer")
    if choice.metric == "gainrl-reference" and choice.layer != run["reference"]["layer"]:
        raise UserError(f"the authors' value was computed at layer {run['reference']['layer']} only")
    files = parts + ([out.root / UNDEFINED] if (out.root / UNDEFINED).exists() else [])
    if not files:
        raise UserError(f"ranking {out.root} has no scored rows to rank")
    columns = [c for c in pl.read_parquet_schema(files[0]) if c not in SCORE_COLUMNS]
    with out.ranking_lock():
        stage = out.work / "rank"
        ranking = out.build_ranking(files, choice, run["layers"], columns, run["shard_rows"], stage)
        counts = {**manifest["counts"], **_counts(ranking, skipped=manifest["counts"]["skipped"])}
        outputs = {**_outputs(ranking), "skipped": manifest["outputs"].get("skipped")}
        ranked_at = datetime.now(UTC).isoformat(timespec="seconds")
        new = {**manifest, "ranking": _ranking_info(choice, ranking), "counts": counts, "outputs": outputs}
        new["reranked"] = {"at": ranked_at, "command": sys.argv}
        out.commit(stage, new, replaces_skipped=False)
    _warn_undefined(choice, ranking)
    return ScoreResult(str(out.root), "re-ranked", new)


def choose(folder: str | Path, changes: dict, from_validate: bool = False) -> RankChoice:
    """The folder's current ranking choice with ``changes`` applied, or validate's
    recommendation (``OUT/validate.json``) with ``--from-validate``."""
    out = OutputDir(folder)
    manifest, _ = out.ranked_parts()
    choice = RankChoice.from_dict(manifest["ranking"])
    if from_validate:
        clash = sorted({"metric", "layer", "w_intra", "w_inter"} & set(changes))
        if clash:
            raise UserError(
                f"--from-validate sets the layer and weights; drop --{clash[0].replace('_', '-')}"
            )
        path = out.root / "validate.json"
        if not path.exists():
            raise UserError(f"{path} does not exist; run `anglecurate validate --ranking {out.root}` first")
        report = json.loads(path.read_text())
        if report.get("recommendation") is None:
            raise UserError(
                f"validate made no recommendation for {out.root}: {report.get('why', 'no reason')}"
            )
        changes = {**report["recommendation"], **changes}
    return replace(choice, **changes)


def _ranking_info(choice: RankChoice, ranking: RankingSummary) -> dict:
    return {**choice.to_dict(), "undefined_score": ranking.undefined_score, "length_fit": ranking.length_fit}


def _counts(ranking: RankingSummary, skipped: dict | None = None) -> dict:
    return {
        "scored": ranking.scored,
        "skipped": ranking.skipped if skipped is None else skipped,
        "truncated": ranking.truncated,
        "undefined_score": ranking.undefined_score,
        "dropped": ranking.dropped,
    }


def _outputs(ranking: RankingSummary) -> dict:
    return {
        "ranked": ranking.parts,
        "skipped": SKIPPED if ranking.skipped else None,
        "undefined": UNDEFINED if ranking.dropped else None,
    }


def _warn_undefined(choice: RankChoice, ranking: RankingSummary) -> None:
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
        if tag not in expected or same_run(marker["run"], run):
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
