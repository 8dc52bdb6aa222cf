"""The prefill features a finished ranking stores, as the arrays the learnability predictor
(:mod:`anglecurate.stats.learnability`) fits on: one row per scored row, in rank order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.scoring.embeddings import read_embeddings
from anglecurate.scoring.ranking import floats
from anglecurate.scoring.store import UNDEFINED, OutputDir


@dataclass(frozen=True)
class PrefillFeatures:
    """Every scored row of a ranking (rank order; rows ``--nan-policy drop`` left out last).

    row_index: [n] int64 input rows; uid: [n] the rows' ids.
    features: [n, F] float64, named by ``names`` (:func:`prefill_features`: each scored
        layer's c_intra and c_inter, log1p n_question and n_tokens, the embedding if asked).
    baselines: ``n_question`` and the angle ``score``, [n] float64 each.
    """

    row_index: np.ndarray
    uid: pl.Series
    features: np.ndarray
    names: list[str]
    baselines: dict[str, np.ndarray]


def read_prefill_features(folder: str | Path, embeddings: bool = False) -> PrefillFeatures:
    """The stored features of ``folder``'s scored rows; with ``embeddings`` the pooled hidden
    state too (a ``score --embed`` run, else one line saying how to get one)."""
    from anglecurate.stats.learnability import prefill_features

    out = OutputDir(folder)
    manifest, parts = out.ranked_parts()
    files = parts + ([out.root / UNDEFINED] if (out.root / UNDEFINED).exists() else [])
    columns = ["row_index", "uid", "c_intra_layers", "c_inter_layers", "n_question", "n_tokens", "score"]
    frame = pl.concat([pl.scan_parquet(f).select(columns) for f in files]).collect()
    layers = manifest["run"]["layers"]
    row_index = frame["row_index"].to_numpy().astype(np.int64)
    emb = read_embeddings(out.root, row_index)[1] if embeddings else None
    matrix, names = prefill_features(
        _layer_values(frame["c_intra_layers"], len(layers)),
        _layer_values(frame["c_inter_layers"], len(layers)),
        frame["n_question"].to_numpy(),
        frame["n_tokens"].to_numpy(),
        layers,
        emb,
    )
    baselines = {"n_question": floats(frame["n_question"]), "score": floats(frame["score"])}
    return PrefillFeatures(row_index, frame["uid"], matrix, names, baselines)


def _layer_values(series: pl.Series, n_layers: int) -> np.ndarray:
    """A list column of per-layer float32 values (null entries as NaN): [n, L] float64."""
    flat = series.explode().cast(pl.Float64).fill_null(np.nan).to_numpy()
    return flat.reshape(series.len(), n_layers)
