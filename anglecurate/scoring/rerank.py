"""`anglecurate rank`: a finished ranking ordered again from its stored per-layer values,
without the model, swapped in atomically; and the choice a re-rank applies."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scoring.merge import counts_of, outputs_of, ranking_info, warn_undefined
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.result import ScoreResult
from anglecurate.scoring.store import SCORE_COLUMNS, UNDEFINED, OutputDir
from anglecurate.storage.lock import exclusive_writer


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
        counts = {**manifest["counts"], **counts_of(ranking, skipped=manifest["counts"]["skipped"])}
        outputs = {**outputs_of(ranking), "skipped": manifest["outputs"].get("skipped")}
        ranked_at = datetime.now(UTC).isoformat(timespec="seconds")
        new = {**manifest, "ranking": ranking_info(choice, ranking), "counts": counts, "outputs": outputs}
        new["reranked"] = {"at": ranked_at, "command": sys.argv}
        out.commit(stage, new, replaces_skipped=False)
    warn_undefined(choice, ranking)
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
