"""Dataset readers: JSON array, JSONL (optionally gzipped) and Parquet, read in row chunks.

Only this module and :mod:`anglecurate.scoring.store` touch data files. A reader knows its schema,
row count and content fingerprint up front and yields fixed row ranges (chunk i covers rows
[i*C, (i+1)*C)), so a resumed run can skip finished chunks and memory stays bounded by the
chunk size. Parquet is sliced lazily by row group and JSONL is streamed line by line; a
JSON array has to be parsed whole (use JSONL or Parquet for very large sets).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from anglecurate.errors import UserError

FORMATS = ("parquet", "jsonl", "json")


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        return "jsonl"
    if name.endswith((".json", ".json.gz")):
        # A .json file may hold JSON lines; the first non-blank character decides.
        with _open_text(path) as f:
            head = f.read(4096).lstrip()
        return "json" if head.startswith("[") else "jsonl"
    raise UserError(f"{path}: unknown data format; use .json, .jsonl, .jsonl.gz or .parquet")


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def file_fingerprint(path: Path) -> str:
    """Content hash of the file (blake2b, streamed): identifies the dataset for resume."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Dataset:
    """A prompt dataset opened for chunked reading."""

    path: Path
    format: str
    schema: pl.Schema
    num_rows: int
    fingerprint: str
    _frame: pl.DataFrame | None = None  # JSON arrays only: parsed once, whole

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names())

    def iter_chunks(
        self, chunk_rows: int, skip: set[int] = frozenset()
    ) -> Iterator[tuple[int, pl.DataFrame]]:
        """Yield (chunk index, rows) for every chunk not in ``skip``, in order."""
        if self.format == "jsonl":
            yield from self._iter_jsonl(chunk_rows, skip)
            return
        n_chunks = -(-self.num_rows // chunk_rows)
        for i in range(n_chunks):
            if i in skip:
                continue
            if self._frame is not None:
                yield i, self._frame.slice(i * chunk_rows, chunk_rows)
            else:
                yield i, pl.scan_parquet(self.path).slice(i * chunk_rows, chunk_rows).collect()

    def duplicates(self, column: str, limit: int = 3) -> list:
        """Up to ``limit`` values of ``column`` that occur more than once (nulls included)."""
        if self.format == "parquet":
            frame = pl.scan_parquet(self.path).select(column).collect()
        else:
            frame = pl.concat([c.select(column) for _, c in self.iter_chunks(65536)])
        counts = frame.group_by(column).len()
        return counts.filter(pl.col("len") > 1).head(limit)[column].to_list()

    def _iter_jsonl(self, chunk_rows: int, skip: set[int]) -> Iterator[tuple[int, pl.DataFrame]]:
        for i, (first_line, lines) in enumerate(_line_batches(self.path, chunk_rows)):
            if i not in skip:
                yield i, _parse_lines(lines, self.path, first_line, self.schema)


def _line_batches(path: Path, size: int) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines in batches of ``size``, with the 1-based line number of each batch."""
    batch: list[str] = []
    start = 1
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if not batch:
                start = lineno
            batch.append(line)
            if len(batch) == size:
                yield start, batch
                batch = []
    if batch:
        yield start, batch


def _parse_lines(lines: list[str], path: Path, first_line: int, schema=None) -> pl.DataFrame:
    try:
        # Without a schema (the inference pass) every line counts, not only the first 100.
        return pl.read_ndjson(io.StringIO("".join(lines)), schema=schema, infer_schema_length=None)
    except Exception as exc:
        # Name the offending line: polars' own error does not.
        for offset, line in enumerate(lines):
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("not a JSON object")
            except ValueError as bad:
                raise UserError(
                    f"{path}:{first_line + offset}: malformed JSON line ({bad}); fix or remove that row"
                ) from exc
        raise UserError(f"{path}: cannot parse rows near line {first_line}: {exc}") from exc


def open_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file {path} not found; pass --data with a JSON, JSONL or Parquet file")
    if path.is_dir():
        raise UserError(f"--data {path} is a directory; pass one JSON, JSONL or Parquet file")
    fmt = detect_format(path)
    try:
        fingerprint = file_fingerprint(path)
        if fmt == "parquet":
            lazy = pl.scan_parquet(path)
            schema = lazy.collect_schema()
            num_rows = lazy.select(pl.len()).collect().item()
            dataset = Dataset(path, fmt, schema, num_rows, fingerprint)
        elif fmt == "json":
            frame = _read_json_array(path)
            dataset = Dataset(path, fmt, frame.schema, frame.height, fingerprint, frame)
        else:
            schema, num_rows = _scan_jsonl(path)
            dataset = Dataset(path, fmt, schema, num_rows, fingerprint)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    except Exception as exc:
        raise UserError(f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from exc
    if dataset.num_rows == 0:
        raise UserError(f"{path} has no rows")
    return dataset


def _read_json_array(path: Path) -> pl.DataFrame:
    with _open_text(path) as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: expected a JSON array of objects (one per row)")
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()


def _scan_jsonl(path: Path) -> tuple[pl.Schema, int]:
    """One streaming pass: the schema unified over every row, and the row count."""
    empties: list[pl.DataFrame] = []
    num_rows = 0
    for first_line, lines in _line_batches(path, 8192):
        frame = _parse_lines(lines, path, first_line)
        empties.append(frame.clear())
        num_rows += frame.height
    if not empties:
        return pl.Schema(), 0
    return pl.concat(empties, how="diagonal_relaxed").schema, num_rows


def prompt_kind(dataset: Dataset, field: str) -> str:
    """``text`` for a string column, ``messages`` for a list of {role, content} structs."""
    if field not in dataset.schema:
        raise UserError(f"{dataset.path} has no column {field!r}; pass --field with one of {dataset.columns}")
    dtype = dataset.schema[field]
    if dtype == pl.String:
        return "text"
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        names = {f.name for f in dtype.inner.fields}
        if {"role", "content"} <= names:
            return "messages"
    raise UserError(
        f"column {field!r} has type {dtype}; --field must name a string column or a list of "
        "{role, content} chat messages"
    )
