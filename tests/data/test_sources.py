"""Data where users keep it: shard folders and globs, save_to_disk folders, hub dataset ids
read from a local Hugging Face cache laid out as the hub client lays it out (offline)."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from anglecurate.base.errors import UserError
from anglecurate.data.dataset import open_dataset

from ..conftest import shared_file

ROWS = [{"q": f"question {i}", "n": i} for i in range(23)]


def _rows(ds, size=5) -> list[str]:
    chunks = list(ds.iter_chunks(size))
    assert [i for i, _ in chunks] == list(range(len(chunks)))
    assert all(f.height == size for _, f in chunks[:-1]), "every chunk but the last is whole"
    return sum((f["q"].to_list() for _, f in chunks), [])


def _write_shards(folder, fmt, sizes=(7, 9, 7)):
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for n, size in enumerate(sizes):
        part = ROWS[start : start + size]
        start += size
        name = folder / f"train-{n:05d}-of-{len(sizes):05d}.{fmt}"
        if fmt == "parquet":
            pl.DataFrame(part).write_parquet(name)
        elif fmt == "jsonl.gz":
            with gzip.open(name, "wt") as f:
                f.write("\n".join(json.dumps(r) for r in part))
        else:
            name.write_text("\n".join(json.dumps(r) for r in part) + "\n")
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "jsonl.gz"])
def test_a_shard_folder_reads_as_one_dataset_across_shard_boundaries(tmp_path, fmt):
    folder = _write_shards(tmp_path / "data", fmt)
    (folder / "README.md").write_text("not data")  # other files are passed over
    ds = open_dataset(folder)
    assert ds.num_rows == 23 and ds.format == fmt.removesuffix(".gz")
    assert _rows(ds) == [r["q"] for r in ROWS], "chunks of 5 cross the 7/9/7 shard boundaries"
    assert [i for i, _ in ds.iter_chunks(5, skip={0, 1, 3})] == [2, 4]
    assert len(ds.files) == 3 and ds.source.origin == {"kind": "folder", "files": 3}


def test_shards_are_read_in_sorted_order_and_the_glob_reads_the_same(tmp_path, monkeypatch):
    folder = _write_shards(tmp_path / "data", "parquet")
    ds = open_dataset(folder)
    assert [f.name for f in ds.files] == sorted(f.name for f in ds.files)
    monkeypatch.chdir(tmp_path)
    by_glob = open_dataset("data/train-*.parquet")
    assert _rows(by_glob) == _rows(ds)
    assert by_glob.fingerprint == ds.fingerprint, "same files, same names relative to the folder"
    only_two = open_dataset("data/train-0000[01]-*.parquet")
    assert only_two.num_rows == 16
    with pytest.raises(UserError, match="matches no file"):
        open_dataset("data/test-*.parquet")


def test_the_fingerprint_follows_every_shards_content(tmp_path):
    folder = _write_shards(tmp_path / "data", "parquet")
    before = open_dataset(folder).fingerprint
    pl.DataFrame(ROWS[16:23][::-1]).write_parquet(folder / "train-00002-of-00003.parquet")
    assert open_dataset(folder).fingerprint != before


def test_shards_with_different_schemas_are_refused_naming_the_file(tmp_path):
    folder = _write_shards(tmp_path / "data", "parquet")
    odd = folder / "train-00001-of-00003.parquet"
    pl.DataFrame([{"q": "x", "n": "not a number"}]).write_parquet(odd)
    with pytest.raises(UserError, match=f"shard {odd} stores column 'n' as String"):
        open_dataset(folder)
    pl.DataFrame([{"q": "x"}]).write_parquet(odd)
    with pytest.raises(UserError, match=f"shard {odd} has no columns \\['n'\\]"):
        open_dataset(folder)


def test_mixed_formats_and_empty_folders_are_one_line(tmp_path):
    folder = _write_shards(tmp_path / "data", "parquet")
    (folder / "extra.jsonl").write_text('{"q": "x", "n": 1}\n')
    with pytest.raises(UserError, match="must share one format"):
        open_dataset(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="folder with no data files"):
        open_dataset(tmp_path / "empty")


def test_a_malformed_line_is_named_by_shard_and_line(tmp_path):
    folder = _write_shards(tmp_path / "data", "jsonl")
    bad = folder / "train-00001-of-00003.jsonl"
    lines = bad.read_text().splitlines()
    lines[3] = '{"q": oops}'
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"{bad}:4: malformed JSON line"):
        open_dataset(folder)


def test_save_to_disk_folders_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(tmp_path / "one", num_shards=3)  # several Arrow files
    opened = open_dataset(tmp_path / "one")
    assert opened.format == "arrow" and len(opened.files) > 1
    assert _rows(opened) == [r["q"] for r in ROWS]
    assert opened.schema["n"] == pl.Int64

    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(tmp_path / "dict")
    assert open_dataset(tmp_path / "dict", split="test").num_rows == 3
    with pytest.raises(UserError, match="has splits \\['train', 'test'\\]; pass --split"):
        open_dataset(tmp_path / "dict", split="validation")


def hub_dataset(cache, repo="org/probs", files=None, sha="0123abcd" * 5):
    """A dataset repository in a Hugging Face cache, laid out as the hub client lays it out."""
    repo_dir = cache / f"datasets--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / sha
    for name, frame in (files or {}).items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(snap / name)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    return snap


def test_a_hub_dataset_id_reads_its_split_from_the_local_cache(offline_cache):
    pytest.importorskip("datasets")
    frame = pl.DataFrame(ROWS)
    files = {
        "data/train-00000-of-00002.parquet": frame.head(12),
        "data/train-00001-of-00002.parquet": frame.slice(12),
        "data/test-00000-of-00001.parquet": frame.head(4),
    }
    hub_dataset(offline_cache, files=files)
    train = open_dataset("org/probs")
    assert _rows(train) == [r["q"] for r in ROWS]
    assert train.source.origin["kind"] == "hub" and train.source.origin["revision"] == "0123abcd" * 5
    assert open_dataset("org/probs", split="test").num_rows == 4
    with pytest.raises(UserError, match="has splits \\['test', 'train'\\]; pass --split"):
        open_dataset("org/probs", split="validation")


def test_a_hub_dataset_neither_cached_nor_reachable_is_one_line(offline_cache):
    with pytest.raises(UserError) as info:
        open_dataset("org/absent")
    message = str(info.value)
    assert "\n" not in message
    assert "nor in the local Hugging Face cache" in message and "HF_HUB_OFFLINE is set" in message


def test_real_math_shards_read_the_same_rows_as_the_file(tmp_path):
    whole = pl.read_parquet(shared_file("math_train.parquet")).head(1000)
    whole.write_parquet(tmp_path / "all.parquet")
    (tmp_path / "shards").mkdir()
    for i in range(4):
        whole.slice(250 * i, 250).write_parquet(tmp_path / "shards" / f"part-{i}.parquet")
    one, many = open_dataset(tmp_path / "all.parquet"), open_dataset(tmp_path / "shards")
    a = pl.concat([f for _, f in one.iter_chunks(300)])
    b = pl.concat([f for _, f in many.iter_chunks(300)])
    assert a.equals(b)


# -- through `score`: resume, refusal of a changed input, one-line errors ---------------------
def _score(model, data, out, *extra):
    return [
        "score",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--dtype",
        "fp32",
        "--layers",
        "last",
        *extra,
    ]


def test_a_shard_folder_scores_and_resumes_exactly_as_one_file(
    tiny_model_dir, math_json, tmp_path, monkeypatch, capsys
):
    from anglecurate.scoring import pipeline

    from ..helpers import read_ranked, run_cli

    rows = pl.DataFrame(json.loads(math_json.read_text()))
    rows.write_parquet(tmp_path / "all.parquet")
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, start in enumerate((0, 13, 29)):
        rows.slice(start, {0: 13, 13: 16, 29: 11}[start]).write_parquet(shards / f"train-{i:05d}.parquet")
    extra = ["--field", "problem", "--chunk-rows", "8"]
    code, _, err = run_cli(
        monkeypatch, capsys, *_score(tiny_model_dir, tmp_path / "all.parquet", tmp_path / "one", *extra)
    )
    assert code == 0, err

    real, calls = pipeline.score_chunk, []

    def killed_after_two(*args, **kwargs):  # Ctrl-C in the third chunk
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "score_chunk", killed_after_two)
    code, _, err = run_cli(monkeypatch, capsys, *_score(tiny_model_dir, shards, tmp_path / "many", *extra))
    assert code == 130 and "rerun the same command to resume" in err
    monkeypatch.setattr(pipeline, "score_chunk", real)
    code, _, err = run_cli(
        monkeypatch, capsys, *_score(tiny_model_dir, shards, tmp_path / "many", *extra, "--json")
    )
    assert code == 0, err
    assert (
        read_ranked(tmp_path / "many")
        .drop("row_index")
        .equals(read_ranked(tmp_path / "one").drop("row_index"))
    )
    manifest = json.loads((tmp_path / "many" / "manifest.json").read_text())
    assert manifest["run"]["dataset"]["origin"] == {"kind": "folder", "files": 3}

    # a changed shard is a changed input: a new run in that folder is refused
    rows.slice(29, 11).reverse().write_parquet(shards / "train-00002.parquet")
    code, _, err = run_cli(monkeypatch, capsys, *_score(tiny_model_dir, shards, tmp_path / "many", *extra))
    assert code == 2 and "holds a run with different dataset" in err


def test_a_moved_folder_resumes_where_its_input_is_unchanged(
    tiny_model_dir, math_json, tmp_path, monkeypatch, capsys
):
    """The dataset is known by its content, not its path: a project folder (input and
    output) moved elsewhere mid-run resumes there; a changed input is still refused."""
    import shutil

    from anglecurate.scoring import pipeline

    from ..helpers import read_ranked, run_cli

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    pl.DataFrame(json.loads(math_json.read_text())).write_parquet(old / "rows.parquet")
    extra = ["--field", "problem", "--chunk-rows", "8"]

    def score(folder, out):
        args = _score(tiny_model_dir, folder / "rows.parquet", folder / out, *extra)
        return run_cli(monkeypatch, capsys, *args)

    code, _, err = score(old, "whole")
    assert code == 0, err

    real, calls = pipeline.score_chunk, []

    def killed_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "score_chunk", killed_after_two)
    code, _, err = score(old, "out")
    assert code == 130, err
    monkeypatch.setattr(pipeline, "score_chunk", real)
    shutil.move(old, new)
    calls.clear()
    code, _, err = score(new, "out")
    assert code == 0, err
    assert read_ranked(new / "out").drop("row_index").equals(read_ranked(new / "whole").drop("row_index"))
    manifest = json.loads((new / "out" / "manifest.json").read_text())
    assert manifest["run"]["dataset"]["path"] == str((new / "rows.parquet").resolve())

    pl.DataFrame(json.loads(math_json.read_text())).head(20).write_parquet(new / "rows.parquet")
    code, _, err = score(new, "out")
    assert code == 2 and "holds a run with different dataset" in err


@pytest.mark.parametrize(
    "case,needle",
    [
        ("glob-no-match", "matches no file"),
        ("mixed-formats", "must share one format"),
        ("schema-differs", "shards of one dataset must share their columns"),
        ("hub-absent", "neither a local path nor in the local Hugging Face cache"),
        ("hub-split", "has splits ['train']; pass --split"),
        ("dict-split", "pass --split with one of them"),
    ],
)
def test_bad_inputs_are_one_line_exit_2_and_write_nothing(
    tiny_model_dir, offline_cache, tmp_path, monkeypatch, capsys, case, needle
):
    from ..helpers import run_cli

    folder = _write_shards(tmp_path / "data", "parquet")
    data, extra = str(folder), []
    if case == "glob-no-match":
        data = str(tmp_path / "data" / "test-*.parquet")
    elif case == "mixed-formats":
        (folder / "more.jsonl").write_text('{"q": "x", "n": 1}\n')
    elif case == "schema-differs":
        pl.DataFrame([{"q": "x"}]).write_parquet(folder / "train-00009.parquet")
    elif case == "hub-absent":
        data = "org/absent"
    elif case == "hub-split":
        pytest.importorskip("datasets")
        hub_dataset(offline_cache, files={"data/train-00000-of-00001.parquet": pl.DataFrame(ROWS)})
        data, extra = "org/probs", ["--split", "test"]
    elif case == "dict-split":
        datasets = pytest.importorskip("datasets")
        datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "dict")
        data, extra = str(tmp_path / "dict"), ["--split", "test"]
    out = tmp_path / "out"
    capsys.readouterr()  # what setting the case up printed (datasets' own progress bars)
    code, _, err = run_cli(monkeypatch, capsys, *_score(tiny_model_dir, data, out, "--field", "q", *extra))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists()
