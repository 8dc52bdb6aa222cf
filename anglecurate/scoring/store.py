"""The output folder: atomic chunk checkpoints, resume, and the global ranking.

Layout of ``OUT``::

    manifest.json                 written last; its presence means the run is complete
    ranked/part-00000.parquet     rows in rank order, ``shard_rows`` rows per part
    skipped.parquet               rows that were not scored, with ``skip_reason`` (if any)
    undefined.parquet             scored rows with a NaN score, under ``--nan-policy drop``
    embeddings.safetensors        with ``--embed``: pooled question tokens (scoring.embeddings)
    .anglecurate/run.json         the run's options, for resume and refusal (while running)
    .anglecurate/chunks/          one Parquet file per scored chunk of input rows
                                  (``chunk-00012.s1of4.parquet``: shard 1 of 4's rows of it)
    .anglecurate/shards/s1of4.json  a finished shard's timing and device (sharded runs)
    .anglecurate/finalize/, rank/   a ranking being built, swapped in by a COMMIT marker
    .anglecurate/ranking.lock     held by the one process building it (see :meth:`OutputDir.ranking_lock`)

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves only whole files; a rerun skips the chunks that exist. The global sort never
holds the dataset in memory: the ranking is computed from per-row keys alone (row index,
question length, the ranking layer's two values), then each input file's rows are routed to the bucket of
the output part they belong to, and each part is sorted from its bucket. Peak memory is one
input file plus one part plus the keys. A re-rank (`anglecurate rank`) reads the ranked
parts the same way and swaps the new ranking in atomically (see :meth:`OutputDir.commit`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scoring.ranking import RANK_COLUMNS, ROW, RankChoice, key_columns, rank_keys
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet, read_json, write_parquet
from anglecurate.storage.faults import storage_errors
from anglecurate.storage.lock import LOCK_NAME, named_lock

# Columns every ranked row carries before the dataset's own columns, in this order.
SCORE_COLUMNS = (
    "uid",
    "row_index",
    "rank",
    "score",
    "score_length_controlled",
    "c_intra",
    "c_inter",
    "c_intra_layers",
    "c_inter_layers",
    "gainrl_reference",
    "n_tokens",
    "n_prefix",
    "n_question",
    "truncated",
)
SKIP_COLUMN = "skip_reason"
STATUS = "_status"  # "scored" or a SkipReason value
EMBED = "_embedding"  # chunk files only, with --embed: [d] float32 per row (scoring.embeddings)
EMBEDDINGS = "embeddings.safetensors"
SCORED = "scored"
SKIPPED = "skipped.parquet"
UNDEFINED = "undefined.parquet"
COMMIT = "COMMIT"
# What later commands write beside a ranking, describing it: gone with a rescore (--overwrite).
DERIVED_FILES = ("validate.json", "validate.parquet", "calibrate.json", "calibrate.parquet")


class MergeInProgress(UserError):
    """Another process is building this folder's ranking."""


RESERVED_COLUMNS = frozenset(SCORE_COLUMNS) | {SKIP_COLUMN, ROW, STATUS, EMBED}


@dataclass(frozen=True)
class RankingSummary:
    parts: list[dict]  # [{"file": "ranked/part-00000.parquet", "rows": n}, ...]
    scored: int
    undefined_score: int  # NaN scores
    dropped: int  # of those, left out of the ranking (nan_policy "drop")
    skipped: dict[str, int]
    truncated: int
    length_fit: dict


class OutputDir:
    """One run's output folder (see module docstring for the layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {self.root} is a file; pass a folder path (it is created)")

    # -- paths -----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def work(self) -> Path:
        return self.root / ".anglecurate"

    @property
    def run_path(self) -> Path:
        return self.work / "run.json"

    @property
    def chunk_dir(self) -> Path:
        return self.work / "chunks"

    def chunk_path(self, index: int, tag: str = "") -> Path:
        return self.chunk_dir / f"chunk-{index:05d}{'.' + tag if tag else ''}.parquet"

    @property
    def shard_dir(self) -> Path:
        return self.work / "shards"

    # -- state -----------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        self.recover()
        return read_json(self.manifest_path)

    def ranked_parts(self) -> tuple[dict, list[Path]]:
        """The finished run's manifest and its ranked part files, in rank order."""
        manifest = self.read_manifest()
        if manifest is None:
            raise self.no_ranking()
        parts = [self.root / p["file"] for p in manifest["outputs"]["ranked"]]
        missing = [str(p) for p in parts if not p.exists()]
        if missing:
            raise UserError(f"ranking {self.root} is incomplete: {missing[0]} is missing; rerun score")
        return manifest, parts

    def no_ranking(self) -> UserError:
        """What to say of a folder read as a ranking that holds none (no manifest.json).
        Never "score into it": the folder may be a schedule's, a pilot's or anyone's."""
        finished = "the --out folder of a finished `anglecurate score`"
        if not self.root.exists():
            return UserError(f"{self.root} does not exist; pass {finished}")
        if self.work.is_dir():
            return UserError(
                f"{self.root} holds an unfinished run of `anglecurate score` (no manifest.json yet); "
                "rerun the same command to finish it"
            )
        inner = self.root / "ranking" / self.manifest_path.name  # a pilot folder keeps its ranking there
        hint = f"; {inner.parent} is one" if inner.is_file() else ""
        return UserError(
            f"{self.root} holds no ranking (no manifest.json); pass {finished}, or score one into a "
            f"new folder (`anglecurate score --model M --data D --out NEW`){hint}"
        )

    def previous_run(self) -> dict | None:
        """Options of the run this folder holds, finished or not; None for a fresh folder."""
        run = read_json(self.run_path)
        if run is not None:
            return run
        manifest = self.read_manifest()
        return manifest.get("run") if manifest else None

    def is_foreign(self) -> bool:
        """A non-empty folder that holds no anglecurate run."""
        if not self.root.is_dir() or self.previous_run() is not None:
            return False
        return any(p.name != LOCK_NAME for p in self.root.iterdir())

    def chunk_files(self) -> dict[tuple[int, str], Path]:
        """Every finished chunk file, keyed by (chunk index, shard tag)."""
        if not self.chunk_dir.is_dir():
            return {}
        files = {}
        for path in self.chunk_dir.glob("chunk-*.parquet"):
            name, _, tag = path.name.removesuffix(".parquet").partition(".")
            files[int(name.split("-")[1]), tag] = path
        return files

    def done_chunks(self, tag: str = "") -> set[int]:
        return {index for index, t in self.chunk_files() if t == tag}

    def shard_markers(self) -> dict[str, dict]:
        if not self.shard_dir.is_dir():
            return {}
        return {p.stem: read_json(p) for p in self.shard_dir.glob("*.json")}

    def write_shard_marker(self, tag: str, info: dict) -> None:
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(info, self.shard_dir / f"{tag}.json")

    # -- writing ---------------------------------------------------------------------------
    def clear(self) -> None:
        """Remove every file this tool writes (for --overwrite); leave anything else."""
        # validate's, calibrate's and report's outputs describe the old run, so they go with it.
        for name in ("ranked", ".anglecurate", ".anglecurate-validate", ".anglecurate-calibrate", "report"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("manifest.json", SKIPPED, UNDEFINED, EMBEDDINGS, *DERIVED_FILES):
            (self.root / name).unlink(missing_ok=True)

    def start(self, run: dict, tag: str = "") -> None:
        with storage_errors(self.chunk_dir):
            self.chunk_dir.mkdir(parents=True, exist_ok=True)
        # Half-written files of a killed run; a shard removes only its own, since other
        # shards may be writing into the same folder right now.
        pattern = f".chunk-*.{tag}.parquet.tmp-*" if tag else ".*.tmp-*"
        for stale in self.work.rglob(pattern):
            stale.unlink(missing_ok=True)
        atomic_write_json(run, self.run_path)

    def discard_empty_start(self) -> None:
        """Undo :meth:`start` when no chunk was written; remove OUT if it is left empty (the
        writer lock removes a folder it created once it is released)."""
        shutil.rmtree(self.work, ignore_errors=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def write_chunk(self, index: int, frame: pl.DataFrame, tag: str = "") -> None:
        atomic_write_parquet(frame, self.chunk_path(index, tag))

    @property
    def ranking_lock_path(self) -> Path:
        return self.work / "ranking.lock"

    @contextmanager
    def ranking_lock(self):
        """Held while one process builds the ranking (the merge of a sharded run, a re-rank):
        the writer lock's flock and holder record (see :mod:`anglecurate.storage.lock`), so a
        second live process is refused with :class:`MergeInProgress` and a lock left by a
        killed one is taken over. :meth:`commit` removes the work folder, lock file
        included, while it is held; the lock keeps holding the file it opened until released."""
        with named_lock(
            self.ranking_lock_path,
            shown=self.root,
            what="the ranking lock",
            doing="ranked",
            hint="wait for it to finish or stop it",
            busy=MergeInProgress,
        ):
            yield

    def cleanup_finished(self) -> None:
        """A run killed after its manifest landed leaves only a stale work folder."""
        shutil.rmtree(self.work, ignore_errors=True)

    # -- ranking ---------------------------------------------------------------------------
    def build_ranking(
        self,
        files: list[Path],
        choice: RankChoice,
        layers: list[int],
        columns: Iterable[str],
        shard_rows: int,
        stage: Path,
        extra: pl.DataFrame | None = None,
    ) -> RankingSummary:
        """Rank ``files`` into ``stage`` (``ranked/`` parts, ``undefined.parquet``, and for
        chunk files ``skipped.parquet``); :meth:`commit` swaps them in.

        ``files`` are chunk files (a scoring run) or a finished ranking's parts plus its
        ``undefined.parquet`` (a re-rank). Rank 0 is the highest score (or what
        ``choice.by`` names); ties go to the earlier input row, so shards merged give the
        ranks a single run gives. ``extra``: ``_row`` plus columns to add to every row (or
        replace), null where a row has none; listed in ``columns`` to be written.
        """
        try:
            with storage_errors(stage):
                return self._build_ranking(files, choice, layers, columns, shard_rows, stage, extra)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)  # half a ranking: the rerun rebuilds it
            raise

    def _build_ranking(self, files, choice, layers, columns, shard_rows, stage, extra) -> RankingSummary:
        columns = [c for c in columns if c not in SCORE_COLUMNS]  # --id-field uid: already first
        from_chunks = ROW in pl.read_parquet_schema(files[0])

        def read(path: Path) -> pl.LazyFrame:
            lazy = _as_chunk(pl.scan_parquet(path), from_chunks)
            if extra is None:
                return lazy
            names = lazy.collect_schema().names()
            lazy = lazy.drop([c for c in extra.columns if c != ROW and c in names])
            return lazy.join(extra.lazy(), on=ROW, how="left")

        lazy = pl.concat([read(f) for f in files], how="diagonal_relaxed")
        status = lazy.group_by(STATUS).len().collect()
        counts = dict(zip(status[STATUS].to_list(), status["len"].to_list(), strict=True))
        keys = lazy.filter(pl.col(STATUS) == SCORED).select(ROW, *key_columns(choice, layers)).collect()
        ranks, info = rank_keys(keys, choice)
        shutil.rmtree(stage, ignore_errors=True)
        buckets = stage / "buckets"
        for n, path in enumerate(files):
            rows = read(path).filter(pl.col(STATUS) == SCORED).collect()
            if rows.is_empty():
                continue
            lo, hi = rows[ROW].min(), rows[ROW].max()
            rows = rows.join(ranks.filter(pl.col(ROW).is_between(lo, hi)), on=ROW, how="inner")
            bucket = pl.when(pl.col("rank").is_null()).then(-1).otherwise(pl.col("rank") // shard_rows)
            for (part,), group in (
                rows.with_columns(bucket.alias("_part")).partition_by("_part", as_dict=True).items()
            ):
                target = buckets / (f"part-{part:05d}" if part >= 0 else "undefined")
                target.mkdir(parents=True, exist_ok=True)
                write_parquet(group.drop("_part"), target / f"{n:06d}.parquet")
        order = [*SCORE_COLUMNS, *columns]
        (stage / "ranked").mkdir(parents=True)
        parts = []
        for bucket in sorted(buckets.iterdir()) if buckets.exists() else []:
            frame = pl.concat([pl.read_parquet(f) for f in sorted(bucket.iterdir())], how="diagonal_relaxed")
            frame = frame.sort("rank", ROW).with_columns(pl.col(ROW).alias("row_index")).select(order)
            if bucket.name == "undefined":
                write_parquet(frame, stage / UNDEFINED)
            else:
                write_parquet(frame, stage / "ranked" / f"{bucket.name}.parquet")
                parts.append({"file": f"ranked/{bucket.name}.parquet", "rows": frame.height})
        shutil.rmtree(buckets, ignore_errors=True)
        if from_chunks:
            skipped = lazy.filter(pl.col(STATUS) != SCORED)
            if skipped.select(pl.len()).collect().item():
                frame = skipped.select("uid", pl.col(STATUS).alias(SKIP_COLUMN), *columns).collect()
                write_parquet(frame, stage / SKIPPED)
        truncated = lazy.filter(pl.col(STATUS) == SCORED).select(pl.col("truncated").sum()).collect().item()
        return RankingSummary(
            parts=parts,
            scored=keys.height,
            undefined_score=info["undefined_score"],
            dropped=info["dropped"],
            skipped={k: v for k, v in counts.items() if k != SCORED},
            truncated=int(truncated or 0),
            length_fit=info["length_fit"],
        )

    def commit(
        self, stage: Path, manifest: dict, replaces_skipped: bool, files: tuple[str, ...] = ()
    ) -> None:
        """Make a staged ranking (from :meth:`build_ranking`) the folder's ranking.

        The COMMIT marker is the point of no return: before it the old ranking is intact,
        after it :meth:`recover` (run by every reader) completes the swap, so a kill at any
        moment leaves either the old ranking or the new one, never a mix. The work folder
        (chunks of a scoring run, the stage) is removed last. ``files``: more files of the
        folder the stage replaces (or removes, when it holds none): ``embeddings.safetensors``.
        """
        names = (UNDEFINED, *([SKIPPED] if replaces_skipped else []), *files)
        plan = {name: "replace" if (stage / name).exists() else "remove" for name in names}
        try:
            atomic_write_json(manifest, stage / "manifest.json")
            atomic_write_json(plan, stage / COMMIT)
        except BaseException:
            if not (stage / COMMIT).exists():  # before the point of no return: drop the stage
                shutil.rmtree(stage, ignore_errors=True)
            raise
        self._apply(stage)

    def recover(self) -> None:
        """Finish a committed ranking swap that was interrupted; drop an uncommitted re-rank."""
        for stage in (self.work / "finalize", self.work / "rank"):
            if (stage / COMMIT).exists():
                self._apply(stage)
                return
        shutil.rmtree(self.work / "rank", ignore_errors=True)
        if self.work.is_dir() and not any(self.work.iterdir()):
            self.work.rmdir()

    def _apply(self, stage: Path) -> None:
        """Idempotent: every step checks whether it already happened."""
        plan = read_json(stage / COMMIT)
        new_ranked, ranked = stage / "ranked", self.root / "ranked"
        if new_ranked.exists():
            if ranked.exists():
                os.replace(ranked, stage / "old-ranked")
            os.replace(new_ranked, ranked)
        for name, action in plan.items():
            if action == "replace" and (stage / name).exists():
                os.replace(stage / name, self.root / name)
            elif action == "remove":
                (self.root / name).unlink(missing_ok=True)
        if (stage / "manifest.json").exists():
            os.replace(stage / "manifest.json", self.manifest_path)
        shutil.rmtree(self.work, ignore_errors=True)


def _as_chunk(lazy: pl.LazyFrame, from_chunks: bool) -> pl.LazyFrame:
    """Rows of a chunk file, or of a ranked part in chunk form (``_row``, ``_status``), without
    the columns a ranking computes."""
    if not from_chunks:
        lazy = lazy.rename({"row_index": ROW}).with_columns(pl.lit(SCORED).alias(STATUS))
    names = lazy.collect_schema().names()
    return lazy.drop([c for c in (*RANK_COLUMNS, "row_index", EMBED) if c in names])
