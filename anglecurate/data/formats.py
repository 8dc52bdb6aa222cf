"""One data file at a time: its format, its content hash, its rows.

Formats: Parquet, JSONL (``.jsonl``, ``.ndjson``, optionally gzipped; a ``.json`` file
whose first character is not ``[`` is read as JSON lines too), a JSON array, and Arrow IPC
streams (the ``data-*.arrow`` files of ``datasets.Dataset.save_to_disk``). Only this module
and :mod:`anglecurate.data.dataset` open data files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError

FORMATS = ("parquet", "jsonl", "json", "arrow")
DATA_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json", ".json.gz", ".arrow")


def is_data_file(path: Path) -> bool:
    return path.name.lower().endswith(DATA_SUFFIXES)


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        return "jsonl"
    if name.endswith((".json", ".json.gz")):
        # A .json file may hold JSON lines; the first non-blank character decides.
        try:
            with open_text(path) as f:
                head = f.read(4096).lstrip()
        except UnicodeDecodeError as exc:
            raise not_utf8([path], exc) from exc
        return "json" if head.startswith("[") else "jsonl"
    raise UserError(f"{path}: unknown data format; use .json, .jsonl, .jsonl.gz, .parquet or .arrow")


def open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def not_utf8(files: Iterable[Path], exc: UnicodeDecodeError) -> UserError:
    """The error for text files that do not decode: the first offending file and line (as
    an editor numbers lines), and what to do. The decoder's own position is an offset into
    a buffer, which says nothing to a user."""
    for path in files:
        line = 1
        with _open_bytes(path) as f:
            for raw in f:
                for part in _split_cr(raw) if b"\r" in raw else (raw,):
                    try:
                        part.decode("utf-8")
                    except UnicodeDecodeError as bad:
                        return UserError(
                            f"{path} line {line} is not UTF-8 text (byte 0x{part[bad.start]:02x} at "
                            f"byte {bad.start + 1} of the line); save the file as UTF-8 (from latin1, "
                            f"say: `{_recode_example(path)}`) and pass that"
                        )
                    line += 1
    return UserError(f"a data file is not UTF-8 text ({exc.reason}); save it as UTF-8 and pass that")


def _recode_example(path: Path) -> str:
    name = path.name
    if name.endswith(".gz"):
        plain = Path(name[: -len(".gz")])
        return f"gunzip -c {name} | iconv -f latin1 -t utf-8 > {plain.stem}.utf8{plain.suffix}"
    return f"iconv -f latin1 -t utf-8 {name} > {path.stem}.utf8{path.suffix}"


def file_digest(path: Path) -> str:
    """Content hash of one file (blake2b, streamed)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(files: list[Path], root: Path | None = None) -> str:
    """Identifies a dataset for resume: the content hash of its one file, or, for several,
    a hash over each file's name (relative to ``root``) and content hash, in reading order."""
    if len(files) == 1:
        return file_digest(files[0])
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        name = str(path.relative_to(root)) if root is not None else path.name
        digest.update(f"{name}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


# -- JSON lines ------------------------------------------------------------------------------
Line = tuple[Path, int, str]  # (file, 1-based line number, text)
LineStart = tuple[int, int, int]  # (index of the file in the list, byte offset, 1-based line number)


def jsonl_lines(files: Iterable[Path]) -> Iterator[Line]:
    """Non-blank lines of each file in turn, with where each came from. Text mode splits
    them: ``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a line, so line numbers in error
    messages are the ones an editor shows."""
    for path in files:
        with open_text(path) as f:
            yield from _non_blank(path, f)


def _non_blank(path: Path, f, first_lineno: int = 1) -> Iterator[Line]:
    for lineno, line in enumerate(f, start=first_lineno):
        if line.strip():  # a file's last line may lack its newline: batches join lines
            yield path, lineno, line if line.endswith("\n") else line + "\n"


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _is_blank(raw: bytes) -> bool:
    """What ``raw.decode().strip() == ""`` says, decoding only when ASCII cannot tell."""
    head = raw.lstrip()[:1]
    return not head or (head != b"{" and not raw.decode("utf-8").strip())


def _split_cr(raw: bytes) -> list[bytes]:
    """One binary line (split at ``\\n`` only) split again at each lone ``\\r``, every
    piece keeping its terminator: ``b"a\\rb\\r\\n"`` -> ``[b"a\\r", b"b\\r\\n"]``."""
    *heads, last = raw.split(b"\r")
    parts = [h + b"\r" for h in heads]
    if last == b"\n":
        parts[-1] += last  # \r\n is one terminator
    elif last:
        parts.append(last)
    return parts


@dataclass(frozen=True)
class ChunkStarts:
    """Where each chunk of ``chunk_rows`` non-blank lines starts: three int64 per chunk,
    none per row (so 24 bytes per chunk; a million rows in chunks of 1024 take 23 KiB)."""

    chunk_rows: int
    num_rows: int
    file: array  # 'q': index of the file holding the chunk's first line
    offset: array  # 'q': byte offset of that line in its file (decompressed, if gzipped)
    lineno: array  # 'q': its 1-based line number there

    def __len__(self) -> int:
        return len(self.offset)

    def __getitem__(self, index: int) -> LineStart:
        return self.file[index], self.offset[index], self.lineno[index]


def _row_starts(files: list[Path]) -> Iterator[LineStart]:
    """Where each row (non-blank line) starts, in bytes, parsing nothing. Lines are split and
    skipped as :func:`jsonl_lines` does (text mode's line ends, blank lines), in bytes so that
    their offsets are known (decompressed bytes, if gzipped)."""
    for k, path in enumerate(files):
        at, line = 0, 1
        with _open_bytes(path) as f:
            for raw in f:  # split at \n only: a lone \r splits it again
                for part in _split_cr(raw) if b"\r" in raw else (raw,):
                    if not _is_blank(part):
                        yield k, at, line
                    at += len(part)
                    line += 1


def jsonl_chunk_starts(files: list[Path], chunk_rows: int) -> ChunkStarts:
    """One pass over the files' bytes, parsing nothing, to find where every chunk starts."""
    file, offset, lineno = array("q"), array("q"), array("q")
    n = 0  # non-blank lines so far
    for k, at, line in _row_starts(files):
        if n % chunk_rows == 0:
            file.append(k)
            offset.append(at)
            lineno.append(line)
        n += 1
    return ChunkStarts(chunk_rows, n, file, offset, lineno)


def jsonl_line_of(files: list[Path], row: int) -> tuple[Path, int]:
    """(file, 1-based line number) of row ``row`` (0-based, blank lines not counted): where
    an editor shows it. Reads the bytes up to that row, parsing nothing."""
    for n, (k, _, line) in enumerate(_row_starts(files)):
        if n == row:
            return files[k], line
    raise IndexError(f"row {row} of {len(files)} JSON lines files")


def jsonl_chunk(files: list[Path], starts: ChunkStarts, index: int) -> list[Line]:
    """The lines of chunk ``index``, as :func:`jsonl_lines` gives them: only the bytes from
    its first line to the next chunk's are read (through its files, if it spans several).
    A gzipped file cannot seek: it is decompressed up to the chunk, and that is all."""
    first, at, first_lineno = starts[index]
    # (file, offset) where the next chunk starts; None: the end of the last file
    last, end = starts[index + 1][:2] if index + 1 < len(starts) else (len(files) - 1, None)
    lines: list[Line] = []
    for k in range(first, last + 1):
        lo, hi = (at if k == first else 0), (end if k == last else None)
        if hi is not None and hi <= lo:
            continue  # the next chunk starts at this file's first byte
        with _open_bytes(files[k]) as f:
            if lo:
                f.seek(lo)
            data = f.read() if hi is None else f.read(hi - lo)
        # Text mode over the range splits its lines as over the whole file: it begins at a
        # line start and ends after a line end (a \r\n is never split, as both are one end).
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        lines.extend(_non_blank(files[k], text, first_lineno if k == first else 1))
    return lines


def batches(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def parse_lines(batch: list[Line], schema: pl.Schema | None = None) -> pl.DataFrame:
    """Rows of a batch of JSON lines; a malformed one is named by file and line number."""
    try:
        # Without a schema (the inference pass) every line counts, not only the first 100.
        text = "".join(line for _, _, line in batch)
        return pl.read_ndjson(io.StringIO(text), schema=schema, infer_schema_length=None)
    except Exception as exc:
        for path, lineno, line in batch:
            try:
                if not isinstance(json.loads(line), dict):
                    raise ValueError("not a JSON object")
            except ValueError as bad:
                raise UserError(
                    f"{path}:{lineno}: malformed JSON line ({bad}); fix or remove that row"
                ) from exc
        path, lineno, _ = batch[0]
        raise UserError(f"{path}: cannot parse rows near line {lineno}: {exc}") from exc


def scan_jsonl(path: Path) -> tuple[pl.Schema, int]:
    """One streaming pass over a file: its schema unified over every row, and its row count."""
    empties: list[pl.DataFrame] = []
    num_rows = 0
    for batch in batches(jsonl_lines([path]), 8192):
        frame = parse_lines(batch)
        empties.append(frame.clear())
        num_rows += frame.height
    if not empties:
        return pl.Schema(), 0
    return pl.concat(empties, how="diagonal_relaxed").schema, num_rows


# -- whole-file formats ----------------------------------------------------------------------
def read_json_array(path: Path) -> pl.DataFrame:
    with open_text(path) as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: expected a JSON array of objects (one per row)")
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()


def arrow_table(path: Path):
    """An Arrow IPC stream file, memory-mapped: slicing it reads only the rows it covers."""
    try:
        import pyarrow as pa
    except ImportError:
        raise UserError(
            f"reading {path} (Arrow, from datasets' save_to_disk) needs pyarrow: "
            "pip install 'anglecurate[datasets]'"
        ) from None
    source = pa.memory_map(str(path))  # stays open while the table's buffers refer to it
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:  # the IPC file format, as some writers produce
        return pa.ipc.open_file(source).read_all()


def arrow_frame(table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    return frame if isinstance(frame, pl.DataFrame) else frame.to_frame()
