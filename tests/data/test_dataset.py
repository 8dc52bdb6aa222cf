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


def test_unknown_extension(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n")
    with pytest.raises(UserError, match="unknown data format"):
        open_dataset(path)
