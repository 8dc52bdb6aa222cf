"""Files written whole or not at all: every output of every command goes through here.

A writer writes to a temporary name beside the target and renames it into place, so a
reader (or a rerun after a kill) sees the old file or the new one, never half of one. A
storage fault (a full disk, a quota, a read-only folder) becomes one line naming the file,
and the partial file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.storage.faults import storage_error


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` in place (for files inside a staging folder that is
    itself swapped in); a storage fault is one line naming ``path``, the partial file removed."""
    try:
        frame.write_parquet(path)
    except BaseException as exc:
        _remove(path)
        _raise_storage_error(exc, path)
        raise


def atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.write_parquet(tmp))


def atomic_write_json(data: dict, path: Path) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary name and rename it into place. ``write(tmp)`` writes the
    file at ``tmp``. On any failure (a full disk, Ctrl-C) the temporary file is removed,
    and a storage fault becomes one line naming ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        _raise_storage_error(exc, path)
        raise


def read_json(path: Path) -> dict | None:
    """A JSON file this tool wrote, or None when it does not exist; an unreadable one is
    one line saying what to do."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); remove it or use --overwrite") from exc


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only folder holds no partial file to remove
        path.unlink(missing_ok=True)


def _raise_storage_error(exc: BaseException, path: Path) -> None:
    err = storage_error(exc, path, exact=True)
    if err is not None:
        raise err from exc
