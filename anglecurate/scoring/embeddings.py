"""``score --embed LAYER``: each scored row's pooled question tokens, in a file beside the
ranking.

The vector is the mean, over the question's tokens, of the hidden state that layer's angles
are computed from (its MLP input: the post-attention norm's output), taken in the same
forward pass (:func:`anglecurate.scoring.capture.question_means`). Chunk files carry it as
the ``_embedding`` column, so it resumes with them; the end of the run streams it into

    OUT/embeddings.safetensors
        row_index   [rows] int64    the input row of each vector, ascending
        embeddings  [rows, d] float32
        metadata    layer, hidden, rows, order="row_index"

one row per scored row (skipped rows have none), in input-row order: a re-rank (`rank
--by ...`) changes the order of the ranked rows but never this file. :func:`read_embeddings`
returns the vectors of any rows in any order, the current ranking's by default. The file
is written through the safetensors layout by hand (8-byte header length, JSON header,
little-endian data) so that it streams one chunk at a time; it is read with ``safetensors``.
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scoring.store import EMBED, EMBEDDINGS, ROW, SCORED, STATUS, OutputDir


def write_embeddings(chunks: dict[tuple[int, str], Path], path: Path, layer: int) -> dict:
    """Stream the scored rows' vectors of every chunk file (keyed (index, shard tag), as
    :meth:`OutputDir.chunk_files`) into ``path``, input-row order; returns the manifest's
    record of it. Memory: one chunk's vectors at a time."""
    groups: dict[int, list[Path]] = defaultdict(list)
    for (index, _), file in sorted(chunks.items()):
        groups[index].append(file)  # a sharded run: each shard's rows of the same chunk

    def scored(files: list[Path], columns: list[str]) -> pl.DataFrame:
        frame = pl.concat([pl.scan_parquet(f).select(ROW, STATUS, *columns) for f in files])
        return frame.filter(pl.col(STATUS) == SCORED).sort(ROW).collect()

    rows = [scored(files, [])[ROW].to_numpy() for _, files in sorted(groups.items())]
    row_index = np.concatenate(rows).astype("<i8") if rows else np.zeros(0, "<i8")
    width = 0
    for _, files in sorted(groups.items()):
        vectors = scored(files, [EMBED])[EMBED]
        if vectors.len():
            width = int(vectors.list.len().max())
            break
    n = int(row_index.size)
    header = {
        "row_index": {"dtype": "I64", "shape": [n], "data_offsets": [0, 8 * n]},
        "embeddings": {"dtype": "F32", "shape": [n, width], "data_offsets": [8 * n, 8 * n + 4 * n * width]},
        "__metadata__": {"layer": str(layer), "hidden": str(width), "rows": str(n), "order": "row_index"},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.write(row_index.tobytes())
        for _, files in sorted(groups.items()):
            frame = scored(files, [EMBED])
            if frame.height:
                block = frame[EMBED].explode().to_numpy().astype("<f4").reshape(frame.height, width)
                f.write(block.tobytes())
    return {"file": EMBEDDINGS, "layer": layer, "rows": n, "hidden": width, "dtype": "float32"}


def read_embeddings(folder: str | Path, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row_index [m] int64, embeddings [m, d] float32) of a finished ``score --embed`` run:
    of ``rows`` (input row indices, in that order), or of every ranked row in rank order
    (rows left out of the ranking by ``--nan-policy drop`` last). Loads the whole file."""
    from safetensors.numpy import load_file

    out = OutputDir(folder)
    manifest, parts = out.ranked_parts()
    path = out.root / EMBEDDINGS
    if manifest["run"].get("embed") is None or not path.exists():
        raise UserError(
            f"{out.root} holds no embeddings; score it with `anglecurate score ... --embed LAYER`"
        )
    tensors = load_file(path)
    stored, vectors = tensors["row_index"], tensors["embeddings"]
    if rows is None:
        files = parts + (
            [out.root / "undefined.parquet"] if (out.root / "undefined.parquet").exists() else []
        )
        rows = pl.concat([pl.scan_parquet(f).select("row_index") for f in files]).collect()["row_index"]
    rows = np.asarray(rows, dtype=np.int64)
    at = np.searchsorted(stored, rows)
    found = at < stored.size
    found[found] = stored[at[found]] == rows[found]
    if not found.all():
        raise UserError(f"{out.root}: row {int(rows[~found][0])} has no embedding (it was not scored)")
    return rows, vectors[at]
