"""The output folder: atomic chunk checkpoints, resume, and the global ranking.

Layout of ``OUT``::

    manifest.json                 written last; its presence means the run is complete
    ranked/part-00000.parquet     rows in rank order, ``shard_rows`` rows per part
    skipped.parquet               rows that were not scored, with ``skip_reason`` (if any)
    .anglecurate/run.json         the run's options, for resume and refusal (while running)
    .anglecurate/chunks/          one Parquet file per scored chunk of input rows
                                  (``chunk-00012.s1of4.parquet``: shard 1 of 4's rows of it)
    .anglecurate/shards/s1of4.json  a finished shard's timing and device (sharded runs)

Every file is written to a temporary name and renamed into place, so a run killed at any
moment leaves only whole files; a rerun skips the chunks that exist. The global sort never
holds the dataset in memory: the ranking is computed from (row, score) keys alone, then each
chunk's rows are routed to the bucket of the output part they belong to, and each part is
sorted from its bucket. Peak memory is one chunk plus one part plus the keys.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from anglecurate.errors import UserError

# Columns every ranked row carries before the dataset's own columns, in this order.
SCORE_COLUMNS = (
    "uid",
    "row_index",
    "rank",
    "score",
    "c_intra",
    "c_inter",
    "c_intra_layers",
    "c_inter_layers",
    "n_tokens",
    "n_prefix",
    "n_question",
    "truncated",
)
SKIP_COLUMN = "skip_reason"
ROW = "_row"  # global input row index: the tie-breaker and the resume key
STATUS = "_status"  # "scored" or a SkipReason value
SCORED = "scored"


class MergeInProgress(UserError):
    """Another process holds the merge lock of this folder."""


RESERVED_COLUMNS = frozenset(SCORE_COLUMNS) | {SKIP_COLUMN, ROW, STATUS}


def atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def atomic_write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class RankingSummary:
    parts: list[dict]  # [{"file": "ranked/part-00000.parquet", "rows": n}, ...]
    scored: int
    undefined_score: int  # NaN scores, ranked last
    skipped: dict[str, int]
    truncated: int


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
        return _read_json(self.manifest_path)

    def ranked_parts(self) -> tuple[dict, list[Path]]:
        """The finished run's manifest and its ranked part files, in rank order."""
        manifest = self.read_manifest()
        if manifest is None:
            raise UserError(
                f"{self.root} holds no finished ranking (no manifest.json); run "
                f"`anglecurate score --out {self.root}` first (or let it finish)"
            )
        parts = [self.root / p["file"] for p in manifest["outputs"]["ranked"]]
        missing = [str(p) for p in parts if not p.exists()]
        if missing:
            raise UserError(f"ranking {self.root} is incomplete: {missing[0]} is missing; rerun score")
        return manifest, parts

    def previous_run(self) -> dict | None:
        """Options of the run this folder holds, finished or not; None for a fresh folder."""
        run = _read_json(self.run_path)
        if run is not None:
            return run
        manifest = self.read_manifest()
        return manifest.get("run") if manifest else None

    def is_foreign(self) -> bool:
        """A non-empty folder that holds no anglecurate run."""
        return self.root.is_dir() and any(self.root.iterdir()) and self.previous_run() is None

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
        return {p.stem: _read_json(p) for p in self.shard_dir.glob("*.json")}

    def write_shard_marker(self, tag: str, info: dict) -> None:
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(info, self.shard_dir / f"{tag}.json")

    # -- writing ---------------------------------------------------------------------------
    def clear(self) -> None:
        """Remove every file this tool writes (for --overwrite); leave anything else."""
        for name in ("ranked", ".anglecurate"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in ("manifest.json", "skipped.parquet"):
            (self.root / name).unlink(missing_ok=True)

    def start(self, run: dict, tag: str = "") -> None:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        # Half-written files of a killed run; a shard removes only its own, since other
        # shards may be writing into the same folder right now.
        pattern = f".chunk-*.{tag}.parquet.tmp-*" if tag else ".*.tmp-*"
        for stale in self.work.rglob(pattern):
            stale.unlink(missing_ok=True)
        atomic_write_json(run, self.run_path)

    def discard_empty_start(self) -> None:
        """Undo :meth:`start` when no chunk was written; remove OUT if it is left empty."""
        shutil.rmtree(self.work, ignore_errors=True)
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def write_chunk(self, index: int, frame: pl.DataFrame, tag: str = "") -> None:
        atomic_write_parquet(frame, self.chunk_path(index, tag))

    @contextmanager
    def merge_lock(self):
        """Held while one process builds the ranking of a sharded run."""
        lock = self.work / "merge.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise MergeInProgress(
                f"{self.root} is being merged by another process ({lock}); if none is, delete that file"
            ) from None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # finish() may already have removed the work folder

    def finish(self, manifest: dict) -> None:
        atomic_write_json(manifest, self.manifest_path)
        shutil.rmtree(self.work, ignore_errors=True)

    def cleanup_finished(self) -> None:
        """A run killed after its manifest landed leaves only a stale work folder."""
        shutil.rmtree(self.work, ignore_errors=True)

    # -- ranking ---------------------------------------------------------------------------
    def build_ranking(
        self, chunks: dict[tuple[int, str], Path], chunk_rows: int, shard_rows: int, columns: Iterable[str]
    ) -> RankingSummary:
        """Globally sort the chunk files into ``ranked/`` parts (see module docstring).

        Rank 0 is the highest score; NaN scores come last; ties go to the earlier input row,
        so shards merged give the ranks a single run gives.
        """
        lazy = pl.scan_parquet(list(chunks.values()))
        status = lazy.group_by(STATUS).len().collect()
        counts = dict(zip(status[STATUS].to_list(), status["len"].to_list(), strict=True))
        keys = (
            lazy.filter(pl.col(STATUS) == SCORED)
            .select(ROW, pl.col("score").fill_nan(None).alias("_key"))
            .collect()
            .sort(["_key", ROW], descending=[True, False], nulls_last=True)
            .with_row_index("rank")
            .select(ROW, pl.col("rank").cast(pl.Int64), pl.col("_key").is_null().alias("_nan"))
            .sort(ROW)
        )
        stage = self.work / "finalize"
        shutil.rmtree(stage, ignore_errors=True)
        buckets = stage / "buckets"
        for (i, _tag), path in sorted(chunks.items()):
            lo, hi = i * chunk_rows, (i + 1) * chunk_rows
            chunk_keys = keys.filter(pl.col(ROW).is_between(lo, hi, closed="left")).drop("_nan")
            rows = (
                pl.read_parquet(path).filter(pl.col(STATUS) == SCORED).join(chunk_keys, on=ROW, how="inner")
            )
            if rows.is_empty():
                continue
            rows = rows.with_columns((pl.col("rank") // shard_rows).alias("_part"))
            for (part,), group in rows.partition_by("_part", as_dict=True).items():
                target = buckets / f"part-{part:05d}"
                target.mkdir(parents=True, exist_ok=True)
                group.drop("_part").write_parquet(target / path.name)
        order = [*SCORE_COLUMNS, *columns]
        ranked_tmp = stage / "ranked"
        ranked_tmp.mkdir(parents=True)
        parts = []
        for bucket in sorted(buckets.iterdir()) if buckets.exists() else []:
            frame = pl.concat([pl.read_parquet(f) for f in sorted(bucket.iterdir())])
            frame = frame.sort("rank").with_columns(pl.col(ROW).alias("row_index")).select(order)
            frame.write_parquet(ranked_tmp / f"{bucket.name}.parquet")
            parts.append({"file": f"ranked/{bucket.name}.parquet", "rows": frame.height})
        ranked = self.root / "ranked"
        shutil.rmtree(ranked, ignore_errors=True)
        os.replace(ranked_tmp, ranked)
        self._write_skipped(lazy, columns)
        truncated = lazy.filter(pl.col(STATUS) == SCORED).select(pl.col("truncated").sum()).collect().item()
        shutil.rmtree(stage, ignore_errors=True)
        return RankingSummary(
            parts=parts,
            scored=keys.height,
            undefined_score=int(keys["_nan"].sum()),
            skipped={k: v for k, v in counts.items() if k != SCORED},
            truncated=int(truncated or 0),
        )

    def _write_skipped(self, lazy: pl.LazyFrame, columns: Iterable[str]) -> None:
        path = self.root / "skipped.parquet"
        skipped = lazy.filter(pl.col(STATUS) != SCORED)
        if skipped.select(pl.len()).collect().item() == 0:
            path.unlink(missing_ok=True)
            return
        frame = skipped.select("uid", pl.col(STATUS).alias(SKIP_COLUMN), *columns).collect()
        atomic_write_parquet(frame, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); remove it or use --overwrite") from exc
