"""Dataset readers: formats, chunking, schema, errors."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from anglecurate.base.errors import UserError
from anglecurate.data.dataset import open_dataset, prompt_kind

from ..conftest import shared_file

ROWS = [{"q": f"question {i}", "n": i} for i in range(10)]


def _chunks(ds, size):
    return [(i, f["q"].to_list()) for i, f in ds.iter_chunks(size)]


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.json", "lines.json", "d.parquet"])
def test_every_format_reads_the_same_rows_in_chunks(tmp_path, name):
    path = tmp_path / name
    lines = "\n\n".join(json.dumps(r) for r in ROWS) + "\n"  # blank lines are ignored
    if name == "d.jsonl" or name == "lines.json":
        path.write_text(lines)
    elif name == "d.jsonl.gz":
        with gzip.open(path, "wt") as f:
            f.write(lines)
    elif name == "d.json":
        path.write_text(json.dumps(ROWS))
    else:
        pl.DataFrame(ROWS).write_parquet(path)
    ds = open_dataset(path)
    assert ds.num_rows == 10 and ds.columns == ["q", "n"]
    chunks = _chunks(ds, 4)
    assert [i for i, _ in chunks] == [0, 1, 2]
    assert sum((q for _, q in chunks), []) == [r["q"] for r in ROWS]
    assert [i for i, _ in ds.iter_chunks(4, skip={0, 2})] == [1]
    assert prompt_kind(ds, "q") == "text"


def test_jsonl_schema_is_unified_over_all_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"q": "a"}] * 9000 + [{"q": "b", "late": 1.5}]  # a column first seen late
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = open_dataset(path)
    assert ds.schema["late"] == pl.Float64
    last = list(ds.iter_chunks(4096))[-1][1]
    assert last["late"].to_list()[-1] == 1.5


def test_verl_layout_is_messages():
    ds = open_dataset(shared_file("math_train.parquet"))
    assert ds.num_rows == 7500 and prompt_kind(ds, "prompt") == "messages"
    assert ds.fingerprint == open_dataset(shared_file("math_train.parquet")).fingerprint
    with pytest.raises(UserError, match="type"):
        prompt_kind(ds, "extra_info")


def test_duplicates_found(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"id": i % 3}) for i in range(5)))
    assert sorted(open_dataset(path).duplicates("id")) == [0, 1]


@pytest.mark.parametrize(
    "content,needle", [("", "no rows"), ("[1, 2]", "array of objects"), ('[{"a": 1},', "malformed JSON")]
)
def test_bad_json_files(tmp_path, content, needle):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(UserError, match=needle):
        open_dataset(path)


def test_a_gzipped_or_sharded_file_that_is_not_utf8_is_named_by_file_and_line(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    with gzip.open(tmp_path / "shards" / "b.jsonl.gz", "wb") as f:
        f.write(b'{"q": "fine"}\r{"q": "caf\xe9"}\n')  # a lone \r ends a line too
    with pytest.raises(UserError) as info:
        open_dataset(tmp_path / "shards")
    assert str(info.value) == (
        f"{tmp_path / 'shards' / 'b.jsonl.gz'} line 2 is not UTF-8 text (byte 0xe9 at byte 11 of the "
        "line); save the file as UTF-8 (from latin1, say: `gunzip -c b.jsonl.gz | iconv -f latin1 -t "
        "utf-8 > b.utf8.jsonl`) and pass that"
    )


def test_unknown_extension(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n")
    with pytest.raises(UserError, match="unknown data format"):
        open_dataset(path)


# -- read_chunk: chunk i alone, equal to the i-th chunk iter_chunks yields -------------------
def count_reads(monkeypatch, path) -> list[int]:
    """Count what Python reads of ``path`` (bytes or characters, through iteration or read),
    whichever way the reader opens it; returns a one-item list holding the running total."""
    import builtins

    total = [0]
    real_open = builtins.open

    class Counted:
        def __init__(self, f):
            self._f = f

        def __iter__(self):
            for line in self._f:
                total[0] += len(line)
                yield line

        def read(self, *args):
            data = self._f.read(*args)
            total[0] += len(data)
            return data

        def read1(self, *args):
            data = self._f.read1(*args)
            total[0] += len(data)
            return data

        def readline(self, *args):
            data = self._f.readline(*args)
            total[0] += len(data)
            return data

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def counting_open(file, *args, **kwargs):
        f = real_open(file, *args, **kwargs)
        return Counted(f) if str(file) == str(path) else f

    monkeypatch.setattr(builtins, "open", counting_open)
    return total


def _write(path, rows, fmt, newline="\n", blank=False):
    """``rows`` in ``fmt``; JSON lines end in ``newline`` and, with ``blank``, blank and
    whitespace-only lines sit between them (the reader passes over those)."""
    if fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif fmt == "arrow":
        import pyarrow as pa

        table = pl.DataFrame(rows).to_arrow()
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=3)  # several record batches
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        gap = newline + (f"  {newline}\t{newline}" if blank else "")
        text = gap.join(json.dumps(r) for r in rows)  # the last line has no newline
        data = text.encode()
        if path.name.endswith(".gz"):
            with gzip.open(path, "wb") as f:
                f.write(data)
        else:
            path.write_bytes(data)
    return path


def _assert_read_chunk_matches(ds):
    for size in (1, 3, 4, 7, ds.num_rows, ds.num_rows + 5):
        streamed = list(ds.iter_chunks(size))
        assert len(streamed) == -(-ds.num_rows // size)
        for i, frame in reversed(streamed):  # in any order: no chunk depends on the one before
            alone = ds.read_chunk(i, size)
            assert alone.schema == frame.schema and alone.equals(frame), (size, i)
        with pytest.raises(IndexError):
            ds.read_chunk(len(streamed), size)


CASES = [
    ("d.parquet", "parquet", {}),
    ("d.arrow", "arrow", {}),
    ("d.json", "json", {}),
    ("d.jsonl", "jsonl", {}),
    ("lines.json", "jsonl", {}),
    ("d.jsonl.gz", "jsonl", {}),
    ("crlf.jsonl", "jsonl", {"newline": "\r\n"}),
    ("cr.jsonl", "jsonl", {"newline": "\r"}),
    ("blank.jsonl", "jsonl", {"blank": True}),
    ("crlf-blank.jsonl.gz", "jsonl", {"newline": "\r\n", "blank": True}),
]


@pytest.mark.parametrize("name,fmt,kw", CASES, ids=[c[0] for c in CASES])
def test_read_chunk_equals_the_chunk_iter_chunks_yields(tmp_path, name, fmt, kw):
    rows = [{"q": f"question {i} é✓", "n": i} for i in range(11)]  # 11: every size leaves a partial chunk
    ds = open_dataset(_write(tmp_path / name, rows, fmt, **kw))
    assert ds.format == fmt and ds.num_rows == 11
    _assert_read_chunk_matches(ds)


@pytest.mark.parametrize("suffix", ["parquet", "arrow", "jsonl", "jsonl.gz", "crlf.jsonl"])
def test_read_chunk_crosses_shard_files(tmp_path, suffix):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"q": f"question {i}", "n": i} for i in range(23)]
    start, fmt = 0, suffix.split(".")[-1] if suffix != "jsonl.gz" else "jsonl"
    for n, size in enumerate((7, 1, 9, 6)):  # chunks of 3, 4 and 7 straddle every boundary
        kw = {"newline": "\r\n", "blank": True} if suffix.startswith("crlf") else {}
        _write(folder / f"train-{n:05d}.{suffix}", rows[start : start + size], fmt, **kw)
        start += size
    ds = open_dataset(folder)
    assert len(ds.files) == 4 and ds.num_rows == 23
    _assert_read_chunk_matches(ds)


def test_read_chunk_names_a_malformed_line_as_iter_chunks_does(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"q": f"question {i:02d}", "n": i} for i in range(20)]
    for n in range(2):
        _write(folder / f"part-{n}.jsonl", rows[n * 10 : (n + 1) * 10], "jsonl", newline="\r\n", blank=True)
    ds = open_dataset(folder)
    ds.read_chunk(0, 4)  # the chunk index is built from the good file
    bad = folder / "part-1.jsonl"
    good = json.dumps(rows[16]).encode()
    text = bad.read_bytes()
    assert good in text
    bad.write_bytes(text.replace(good, b"{" + b"x" * (len(good) - 2) + b"}"))  # same length: offsets hold
    with pytest.raises(UserError) as streamed:
        list(ds.iter_chunks(4))
    with pytest.raises(UserError) as alone:
        ds.read_chunk(4, 4)
    assert str(alone.value) == str(streamed.value)
    assert f"{bad}:19: malformed JSON line" in str(alone.value)  # line 7's third physical line
    assert ds.read_chunk(3, 4)["n"].to_list() == [12, 13, 14, 15]


def test_read_chunk_of_a_jsonl_is_random_access_not_a_stream(tmp_path, monkeypatch):
    from anglecurate.data import formats

    rows = [{"q": f"question {i}", "pad": "x" * 50} for i in range(4000)]
    path = _write(tmp_path / "big.jsonl", rows, "jsonl")
    size = path.stat().st_size
    ds = open_dataset(path)
    parsed = []
    real_parse = formats.parse_lines
    monkeypatch.setattr(formats, "parse_lines", lambda b, s=None: parsed.append(len(b)) or real_parse(b, s))
    read = count_reads(monkeypatch, path)

    last = ds.read_chunk(39, 100)
    assert last["q"].to_list() == [f"question {i}" for i in range(3900, 4000)]
    assert parsed == [100], "only the last chunk's lines are parsed"
    assert read[0] <= size + size // 30, "one pass to find chunk starts, then only the last chunk"

    read[0] = 0
    assert ds.read_chunk(39, 100).equals(last)
    assert read[0] <= size // 40 + 100, "the chunk starts are cached: now only the last chunk's bytes"

    read[0] = 0
    for i in reversed(range(40)):
        ds.read_chunk(i, 100)
    assert read[0] <= size + 2 * 4096, "every chunk once: the file once, not 40 passes over its head"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_jsonl_lines_split_and_number_lines_as_text_mode_does(tmp_path, newline):
    """The byte-offset reader numbers and keeps the lines Python's text mode gives: every
    terminator (a CR at a buffer's end, a lone CR inside a line), blank and whitespace-only
    lines, a last line without a newline, multi-byte characters."""
    from anglecurate.data import formats

    path = tmp_path / "d.jsonl"
    body = [json.dumps({"q": "é✓" * (i % 5), "i": i}) for i in range(3000)]
    mixed = '{"a":\r 1}\r\n\n \t\n\x0c\n' + newline.join(body) + "\r\r\n  "
    path.write_bytes(mixed.encode())
    with open(path, encoding="utf-8") as f:  # the reader iter_chunks used before offsets
        expected = [(path, n, s if s.endswith("\n") else s + "\n") for n, s in enumerate(f, 1) if s.strip()]
    assert list(formats.jsonl_lines([path])) == expected
    starts = formats.jsonl_chunk_starts([path], 7)
    assert [formats.jsonl_chunk([path], starts, i) for i in range(len(starts))] == [
        expected[i : i + 7] for i in range(0, len(expected), 7)
    ]


def test_locate_names_a_row_by_line_in_line_files_and_by_index_elsewhere(tmp_path):
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "a.jsonl").write_text('{"q": "0"}\n\n{"q": "1"}\n')
    (lines / "b.jsonl").write_text('\r\n{"q": "2"}\r\n{"q": "3"}\r\n')
    ds = open_dataset(lines)
    assert [ds.locate(r) for r in range(4)] == [
        f"{lines / 'a.jsonl'} line 1",
        f"{lines / 'a.jsonl'} line 3",
        f"{lines / 'b.jsonl'} line 2",
        f"{lines / 'b.jsonl'} line 3",
    ]
    parts = tmp_path / "parts"
    parts.mkdir()
    pl.DataFrame({"q": ["0", "1"]}).write_parquet(parts / "a.parquet")
    pl.DataFrame({"q": ["2"]}).write_parquet(parts / "b.parquet")
    assert open_dataset(parts).locate(2) == f"{parts / 'b.parquet'} row 0 (row_index 2)"
    assert open_dataset(parts / "a.parquet").locate(1) == f"{parts / 'a.parquet'} row 1"
