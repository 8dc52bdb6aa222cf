"""A prompt dataset: one file or many shards, read as one sequence of rows in chunks.

A :class:`Dataset` knows its schema, row count and content fingerprint up front and yields
fixed row ranges (chunk i covers rows [i*C, (i+1)*C) of the whole dataset, across shard
boundaries), so a resumed run can skip finished chunks, row indices (the default uids) are
unique across files, and memory stays bounded by the chunk size whatever the dataset's
size: Parquet is sliced lazily per file, JSONL is streamed line by line, Arrow files are
memory-mapped. A JSON array has to be parsed whole (use JSONL or Parquet for large sets).

:meth:`Dataset.read_chunk` reads one chunk alone (a Ray actor's unit of work, ``inspect
--row``), at a cost that does not grow with the chunk's index:

=========  ==========================================================================
format     cost of ``read_chunk(i)``
=========  ==========================================================================
parquet    the row groups that hold the chunk's rows (``scan_parquet().slice()``)
arrow      a slice of the memory-mapped table: the pages of those rows
json       a slice of the array parsed whole at open (memory: the whole file)
jsonl      a seek and the bytes of the chunk's own lines; the first call for a chunk
           size makes one pass over the bytes, parsing none, to find each chunk's first
           line (cached, 24 bytes per chunk). Gzipped JSONL cannot seek: it decompresses
           up to the chunk (still parsing only the chunk's lines)
=========  ==========================================================================

Shards must agree: Parquet and Arrow shards on every column name and type, JSONL shards on
the column names (their types are inferred from the rows and unified).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError, first_line
from anglecurate.data import formats
from anglecurate.data.sources import DataSource, resolve_data


@dataclass
class Dataset:
    """A prompt dataset opened for chunked reading."""

    path: Path  # what the user named: a file, a folder, a glob, a hub snapshot
    format: str
    schema: pl.Schema
    num_rows: int
    fingerprint: str
    files: list[Path] = field(default_factory=list)
    file_rows: list[int] = field(default_factory=list)
    source: DataSource | None = None
    _frame: pl.DataFrame | None = None  # JSON arrays: parsed once, whole
    _tables: list | None = None  # Arrow: memory-mapped tables
    _chunk_starts: dict[int, formats.ChunkStarts] = field(default_factory=dict, repr=False)  # JSONL

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names())

    def iter_chunks(
        self, chunk_rows: int, skip: set[int] = frozenset()
    ) -> Iterator[tuple[int, pl.DataFrame]]:
        """Yield (chunk index, rows) for every chunk not in ``skip``, in order."""
        if self.format == "jsonl":
            for i, batch in enumerate(formats.batches(formats.jsonl_lines(self.files), chunk_rows)):
                if i not in skip:
                    yield i, formats.parse_lines(batch, self.schema)
            return
        for i in range(-(-self.num_rows // chunk_rows)):
            if i not in skip:
                yield i, self._rows(i * chunk_rows, chunk_rows)

    def read_chunk(self, index: int, chunk_rows: int) -> pl.DataFrame:
        """Chunk ``index`` alone: the frame :meth:`iter_chunks` yields for it (rows
        ``[index * chunk_rows, (index + 1) * chunk_rows)``, across shard files), with the
        same errors for a malformed line. Costs in the module docstring."""
        n_chunks = -(-self.num_rows // chunk_rows)
        if not 0 <= index < n_chunks:
            raise IndexError(f"chunk {index} of {n_chunks} (chunks of {chunk_rows} rows)")
        if self.format != "jsonl":
            return self._rows(index * chunk_rows, chunk_rows)
        starts = self._chunk_starts.get(chunk_rows)
        if starts is None:
            starts = formats.jsonl_chunk_starts(self.files, chunk_rows)
            if starts.num_rows != self.num_rows:  # the index would point at other rows
                raise UserError(
                    f"{self.path} changed since it was opened ({self.num_rows} rows then, "
                    f"{starts.num_rows} now); rerun the command"
                )
            self._chunk_starts[chunk_rows] = starts
        return formats.parse_lines(formats.jsonl_chunk(self.files, starts, index), self.schema)

    def _rows(self, start: int, length: int) -> pl.DataFrame:
        """Rows [start, start + length) of the whole dataset (Parquet, JSON, Arrow)."""
        if self._frame is not None:
            return self._frame.slice(start, length)
        pieces, offset = [], 0
        for n, (path, rows) in enumerate(zip(self.files, self.file_rows, strict=True)):
            lo, hi = max(start - offset, 0), min(start + length - offset, rows)
            if lo < hi:
                if self._tables is not None:
                    pieces.append(formats.arrow_frame(self._tables[n].slice(lo, hi - lo)))
                else:
                    pieces.append(pl.scan_parquet(path).slice(lo, hi - lo).collect())
            offset += rows
        return pl.concat(pieces) if len(pieces) > 1 else pieces[0]

    def locate(self, row: int) -> str:
        """Where row ``row`` (the 0-based row index) is, as a user finds it: ``FILE line N``
        in a JSON lines file (its line, blank lines counted), else ``FILE row N`` (the index
        within that file; with several files, the dataset's row index follows)."""
        if self.format == "jsonl":
            path, line = formats.jsonl_line_of(self.files, row)
            return f"{path} line {line}"
        if len(self.file_rows) < 2:
            return f"{self.path} row {row}"
        offset = 0
        for path, rows in zip(self.files, self.file_rows, strict=True):
            if row < offset + rows:
                return f"{path} row {row - offset} (row_index {row})"
            offset += rows
        return f"{self.path} row {row}"

    def duplicates(self, column: str, limit: int = 3) -> list:
        """Up to ``limit`` values of ``column`` that occur more than once (nulls included)."""
        if self.format == "parquet":
            frame = pl.concat([pl.scan_parquet(f).select(column).collect() for f in self.files])
        else:
            frame = pl.concat([c.select(column) for _, c in self.iter_chunks(65536)])
        counts = frame.group_by(column).len()
        return counts.filter(pl.col("len") > 1).head(limit)[column].to_list()


def open_dataset(spec: str | Path, split: str = "train", config: str | None = None) -> Dataset:
    """Open a ``--data`` spec: a file, a folder or glob of shards, a ``save_to_disk`` folder,
    ``builtin:NAME`` or a hub dataset id (see :func:`anglecurate.data.sources.resolve_data`)."""
    source = resolve_data(str(spec), split, config)
    try:
        dataset = _open(source)
    except UserError:
        raise
    except UnicodeDecodeError as exc:
        raise formats.not_utf8(source.files, exc) from exc
    except OSError as exc:
        raise UserError(f"cannot read {source.label}: {exc}") from exc
    except Exception as exc:
        raise UserError(f"cannot read {source.label} as {source.format}: {first_line(exc)}") from exc
    if dataset.num_rows == 0:
        raise UserError(f"{source.label} has no rows")
    return dataset


def _open(source: DataSource) -> Dataset:
    files, fmt = source.files, source.format
    common = {"files": files, "source": source, "fingerprint": formats.fingerprint(files, source.root)}
    if fmt == "json":
        frames = [formats.read_json_array(f) for f in files]
        _same_schema([f.schema for f in frames], files, names_only=True)
        frame = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
        rows = [f.height for f in frames]
        return Dataset(source.path, fmt, frame.schema, frame.height, file_rows=rows, _frame=frame, **common)
    if fmt == "parquet":
        schemas = [pl.read_parquet_schema(f) for f in files]
        _same_schema(schemas, files)
        rows = [pl.scan_parquet(f).select(pl.len()).collect().item() for f in files]
        return Dataset(source.path, fmt, pl.Schema(schemas[0]), sum(rows), file_rows=rows, **common)
    if fmt == "arrow":
        tables = [formats.arrow_table(f) for f in files]
        schemas = [formats.arrow_frame(t.slice(0, 0)).schema for t in tables]
        _same_schema(schemas, files)
        rows = [t.num_rows for t in tables]
        return Dataset(source.path, fmt, schemas[0], sum(rows), file_rows=rows, _tables=tables, **common)
    scans = [formats.scan_jsonl(f) for f in files]
    _same_schema([s for s, _ in scans], files, names_only=True)
    schema = pl.concat([pl.DataFrame(schema=s) for s, _ in scans], how="diagonal_relaxed").schema
    rows = [n for _, n in scans]
    return Dataset(source.path, fmt, schema, sum(rows), file_rows=rows, **common)


def _same_schema(schemas: list, files: list[Path], names_only: bool = False) -> None:
    """Refuse shards whose columns (and, unless ``names_only``, types) differ from the first's."""
    first = dict(schemas[0])
    for path, schema in zip(files[1:], schemas[1:], strict=True):
        schema = dict(schema)
        if set(schema) != set(first):
            extra, missing = sorted(set(schema) - set(first)), sorted(set(first) - set(schema))
            what = f"extra columns {extra}" if extra else f"no columns {missing}"
            raise UserError(
                f"shard {path} has {what} unlike {files[0]}; shards of one dataset must share their columns"
            )
        if not names_only:
            changed = sorted(c for c in first if schema[c] != first[c])
            if changed:
                c = changed[0]
                raise UserError(
                    f"shard {path} stores column {c!r} as {schema[c]}, {files[0]} as {first[c]}; "
                    "shards of one dataset must share their column types"
                )


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
