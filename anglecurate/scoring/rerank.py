"""`anglecurate rank`: a finished ranking ordered again from its stored columns (the
per-layer values, or any numeric column with ``--by``), without the model, swapped in
atomically; the choice a re-rank applies; and per-row columns added to a finished
ranking the same way (calibrate's ``p_pass`` and ``learnability``)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scoring.merge import counts_of, outputs_of, ranking_info, warn_undefined
from anglecurate.scoring.ranking import COMPUTED, RANK_COLUMNS, ROW, RankChoice
from anglecurate.scoring.result import ScoreResult
from anglecurate.scoring.store import RESERVED_COLUMNS, SCORE_COLUMNS, UNDEFINED, OutputDir
from anglecurate.storage.lock import exclusive_writer


def rerank(folder: str | Path, choice: RankChoice) -> ScoreResult:
    """Rank a finished run again by ``choice`` from its stored columns, without the model;
    the new ranked parts and manifest replace the old ones atomically."""
    out = OutputDir(folder)
    with exclusive_writer(out.root, create=False):
        return _rerank(out, choice)


def attach_columns(folder: str | Path, values: pl.DataFrame, record: dict | None = None) -> ScoreResult:
    """Add per-row columns to a finished ranking (or replace ones added before), atomically.

    ``values``: ``row_index`` (int, the input row) plus one column per new name; a ranked
    row it does not list gets null. The order stays the folder's choice (re-ranked with the
    new values when they are what it is by). The manifest's ``attached`` records each
    name with ``record`` (what wrote it). A name the ranking computes or the dataset brought
    is refused in one line: nothing of the dataset is overwritten.
    """
    out = OutputDir(folder)
    with exclusive_writer(out.root, create=False):
        manifest, parts = out.ranked_parts()
        names = [c for c in values.columns if c != "row_index"]
        attached = manifest.get("attached", {})
        stored = set(pl.read_parquet_schema(parts[0])) if parts else set()
        clash = [c for c in names if c in RESERVED_COLUMNS or (c in stored and c not in attached)]
        if "row_index" not in values.columns or not names or clash:
            what = f"{clash[0]!r} is a column of the ranking already" if clash else "nothing to add"
            raise UserError(f"cannot add columns to {out.root}: {what}; values need row_index and new names")
        if values["row_index"].n_unique() != values.height:
            raise UserError(f"cannot add columns to {out.root}: row_index repeats")
        extra = values.rename({"row_index": ROW}).with_columns(pl.col(ROW).cast(pl.Int64))
        choice = RankChoice.from_dict(manifest["ranking"])
        entry = {name: record or {} for name in names}
        return _rerank(out, choice, extra, {**attached, **entry})


def _rerank(
    out: OutputDir, choice: RankChoice, extra: pl.DataFrame | None = None, attached: dict | None = None
) -> ScoreResult:
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
    if extra is not None:
        columns += [c for c in extra.columns if c != ROW and c not in columns]
    else:
        check_by(choice.by, files, out.root)
    with out.ranking_lock():
        stage = out.work / "rank"
        ranking = out.build_ranking(files, choice, run["layers"], columns, run["shard_rows"], stage, extra)
        counts = {**manifest["counts"], **counts_of(ranking, skipped=manifest["counts"]["skipped"])}
        outputs = {**outputs_of(ranking), "skipped": manifest["outputs"].get("skipped")}
        ranked_at = datetime.now(UTC).isoformat(timespec="seconds")
        new = {**manifest, "ranking": ranking_info(choice, ranking), "counts": counts, "outputs": outputs}
        new["reranked"] = {"at": ranked_at, "command": sys.argv}
        if attached is not None:
            new["attached"] = attached
        out.commit(stage, new, replaces_skipped=False)
    warn_undefined(choice, ranking)
    return ScoreResult(str(out.root), "re-ranked", new)


# Columns `--by` cannot name: the ranking's own outputs (the rank, and the row index and
# score columns it computes again, see ranking.COMPUTED).
_NOT_BY = frozenset({*RANK_COLUMNS, "row_index"})
# Hints for the columns that `anglecurate calibrate` writes.
_CALIBRATED = ("p_pass", "learnability")


def check_by(by: str, files: list[Path], root: Path) -> None:
    """Refuse (one line, listing the usable names) a ``--by`` that is not a numeric column
    with at least one value in the ranked rows ``files``."""
    if by in COMPUTED:
        return
    lazy = pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed")
    schema = lazy.collect_schema()
    if by not in schema or by in _NOT_BY:
        why = f"{root} has no column {by!r}"
        if by in _CALIBRATED:
            why += f" (`anglecurate calibrate --ranking {root}` writes it)"
    elif not schema[by].is_numeric():
        why = f"column {by!r} is not numeric ({schema[by]})"
    elif not _filled(lazy, [by]):
        why = f"column {by!r} has no values (every row is null or NaN)"
    else:
        return
    stored = [c for c, dtype in schema.items() if dtype.is_numeric() and c not in _NOT_BY]
    usable = [*COMPUTED, *_filled(lazy, stored)]
    raise UserError(f"--by {by}: {why}; usable: {', '.join(usable)}")


def _filled(lazy: pl.LazyFrame, columns: list[str]) -> list[str]:
    """Of ``columns`` (numeric), those with at least one value that is not null or NaN."""
    if not columns:
        return []
    counts = lazy.select(
        pl.col(c).cast(pl.Float64).fill_nan(None).is_not_null().sum().alias(c) for c in columns
    ).collect()
    return [c for c in columns if counts[c][0] > 0]


def choose(folder: str | Path, changes: dict, from_validate: bool = False) -> RankChoice:
    """The folder's current ranking choice with ``changes`` applied, or validate's
    recommendation (``OUT/validate.json``) with ``--from-validate``. A new ``by`` walks its
    own direction unless ``ascending`` is given too; ``length_control`` orders by the
    score only, so it is refused beside another ``by``."""
    out = OutputDir(folder)
    manifest, _ = out.ranked_parts()
    choice = RankChoice.from_dict(manifest["ranking"])
    if "by" in changes and "ascending" not in changes:
        changes = {**changes, "ascending": None}
    if changes.get("length_control") and changes.get("by", choice.by) != "score":
        raise UserError(
            f"--length-control orders by the angle score's residual; it does not apply to "
            f"--by {changes.get('by', choice.by)} (pass --by score)"
        )
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
        if changes.get("by", "score") != "score":
            raise UserError("--from-validate ranks by the angle score it recommends; drop --by")
        changes = {**report["recommendation"], "by": "score", "ascending": None, **changes}
    return replace(choice, **changes)
