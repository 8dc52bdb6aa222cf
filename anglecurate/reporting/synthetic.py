"""A made-up ranking folder, for seeing every section of the report without a model.

:func:`synthetic_ranking` writes what `anglecurate score` (and, optionally, `anglecurate
validate`) would: ``manifest.json``, ``ranked/part-*.parquet`` in the ranking schema and
``validate.json`` / ``validate.parquet``. Its values are a U-shaped depth profile plus a
per-row latent that also makes questions shorter and difficulty lower, so a report of it
shows the structure put in, not a finding about any model (docs/report.md). The tests of
the report run on it::

    from anglecurate.reporting.synthetic import synthetic_ranking
    from anglecurate.reporting.write import write_report

    write_report(synthetic_ranking(Path("/tmp/example/OUT"), validate=True, messages=True))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet

# Text in the system turn and an earlier turn of every conversation (``messages=True``):
# the report shows only the question, so neither may appear on its page.
SYSTEM_SENTINEL = "SYSTEM-SENTINEL please reason step by step"
EARLIER_TURN = "EARLIER-TURN-SENTINEL"


def synthetic_ranking(
    root: str | Path,
    rows: int = 300,
    n_layers: int = 30,
    rank_layer: int = 20,
    messages: bool = False,
    validate: bool = False,
    length_control: bool = False,
    nan_rows: int = 6,
    part_rows: int = 128,
    seed: int = 0,
) -> Path:
    """Write a finished ranking folder ``root`` (created; it must not hold ``ranked/``) of
    made-up rows and return it: ``rows`` rows in ``ranked/`` parts of ``part_rows``, per-layer
    ``c_intra_layers`` / ``c_inter_layers`` (float32 lists over ``n_layers`` layers) following a
    smooth depth profile plus a per-row latent that also drives question length, ``level``
    and ``difficulty``; ``nan_rows`` one-token questions with a NaN score; weights 1 and 8 at
    ``rank_layer``. ``messages``: the prompt is a chat conversation (system and earlier turns
    before the question) instead of a ``question`` string. ``validate``: validate.json and
    validate.parquet beside it, with made-up correlations."""
    root = Path(root)
    if (root / "ranked").exists():
        raise UserError(f"{root} already holds a ranking; pass a new folder")
    rng = np.random.default_rng(seed)
    layers = list(range(n_layers))
    depth = np.linspace(0, 1, n_layers)
    n_question = np.clip(np.exp(rng.normal(4.0, 0.8, rows)), 3, 2000).astype(np.int32)
    latent = -0.6 * (np.log(n_question) - 4.0) / 0.8 + rng.normal(0, 0.8, rows)
    intra = (
        0.55
        - 0.3 * np.sin(np.pi * depth)
        + 0.06 * depth * latent[:, None]
        + rng.normal(0, 0.02, (rows, n_layers))
    )
    inter = (
        0.35
        - 0.2 * np.sin(np.pi * depth)
        + 0.04 * depth * latent[:, None]
        + rng.normal(0, 0.02, (rows, n_layers))
    )
    nan_at = rng.choice(rows, nan_rows, replace=False)
    intra[nan_at] = np.nan  # one-token questions: no pairs
    n_question[nan_at] = 1
    pos = layers.index(rank_layer)
    score = intra[:, pos] + 8.0 * inter[:, pos]
    # a stand-in for the monotone fit: score minus the median score of its length decile
    bins = np.digitize(np.log(n_question), np.quantile(np.log(n_question), np.linspace(0.1, 0.9, 9)))
    medians = {}
    for b in np.unique(bins):
        values = score[(bins == b) & ~np.isnan(score)]
        medians[b] = np.median(values) if len(values) else np.nan
    controlled = score - np.array([medians[b] for b in bins])
    key = controlled if length_control else score
    order = np.lexsort((np.arange(rows), np.where(np.isnan(key), np.inf, -key)))  # NaN last
    rank = np.empty(rows, np.int64)
    rank[order] = np.arange(rows)
    difficulty = np.round(np.clip(3 - latent + rng.normal(0, 0.5, rows), 0, 6), 2)
    questions = [
        f"Question {i}: is <b>{i} & {i + 1}</b> prime? " + ("Explain at length. " * 30 if i % 7 == 0 else "")
        for i in range(rows)
    ]
    frame = pl.DataFrame(
        {
            "uid": [f"q{i:04d}" for i in range(rows)],
            "row_index": np.arange(rows, dtype=np.int64),
            "rank": rank,
            "score": score,
            "score_length_controlled": controlled,
            "c_intra": intra[:, pos],
            "c_inter": inter[:, pos],
            "c_intra_layers": intra.astype(np.float32).tolist(),
            "c_inter_layers": inter.astype(np.float32).tolist(),
            "gainrl_reference": pl.Series([None] * rows, dtype=pl.Float64),
            "n_tokens": n_question + 120,
            "n_prefix": np.full(rows, 110, np.int32),
            "n_question": n_question,
            "truncated": np.zeros(rows, bool),
            "level": [
                f"Level {int(np.clip(round(d), 1, 10))}" if d > 0.6 else "Level 10" for d in difficulty
            ],
            "type": rng.choice(["Algebra", "Geometry", "Number Theory"], rows),
            "difficulty": difficulty,
            "stars": rng.integers(1, 4, rows).astype(np.int64),
        },
        schema_overrides={"c_intra_layers": pl.List(pl.Float32), "c_inter_layers": pl.List(pl.Float32)},
    )
    if messages:
        prompt = [
            [
                {"role": "system", "content": SYSTEM_SENTINEL},
                {"role": "user", "content": EARLIER_TURN},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": q},
            ]
            for q in questions
        ]
        frame = frame.with_columns(pl.Series("prompt", prompt))
    else:
        frame = frame.with_columns(pl.Series("question", questions))
    frame = frame.sort("rank")
    (root / "ranked").mkdir(parents=True)
    outputs = []
    for k, start in enumerate(range(0, rows, part_rows)):
        name = f"ranked/part-{k:05d}.parquet"
        atomic_write_parquet(frame.slice(start, part_rows), root / name)
        outputs.append({"file": name, "rows": min(part_rows, rows - start)})
    manifest = {
        "anglecurate_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "run": {
            "model": {"path": "/models/synthetic-qwen-1.5b", "num_layers": n_layers},
            "dataset": {"path": "/data/math-train.parquet", "field": "prompt" if messages else "question"},
            "layers": layers,
        },
        "ranking": {
            "metric": "angles",
            "layer": rank_layer,
            "w_intra": 1.0,
            "w_inter": 8.0,
            "length_control": length_control,
            "nan_policy": "last",
        },
        "counts": {"scored": rows, "skipped": {"too_long": 2}, "truncated": 0, "undefined_score": nan_rows},
        "outputs": {"ranked": outputs, "skipped": None},
    }
    atomic_write_json(manifest, root / "manifest.json")
    if validate:
        _write_validate(root, frame, layers, rng)
    return root


def _write_validate(root: Path, frame: pl.DataFrame, layers: list[int], rng) -> None:
    """validate.json and validate.parquet as `anglecurate validate` writes them, made up."""
    correlations = []
    for layer in layers:
        for comp, scale in (("intra", 0.35), ("inter", -0.15), ("combined", 0.25)):
            rho = float(scale * np.sin(np.pi * layer / len(layers)) + rng.normal(0, 0.03))
            correlations.append(
                {
                    "feature": f"c_{comp}@{layer}",
                    "layer": layer,
                    "component": comp,
                    "target": "grad_norm",
                    "rho": rho,
                    "ci_low": rho - 0.12,
                    "ci_high": rho + 0.12,
                    "p": 0.01,
                    "p_fwer": 0.2 - abs(rho) / 2,
                    "partial_rho": rho * 0.8,
                    "n": 120,
                }
            )
    correlations.append(
        {
            "feature": "score",
            "layer": None,
            "component": "score",
            "target": "grad_norm",
            "rho": -0.13,
            "ci_low": -0.25,
            "ci_high": 0.0,
            "p": 0.04,
            "p_fwer": 0.3,
            "partial_rho": -0.05,
            "n": 120,
        }
    )
    sample = frame.filter(pl.col("score").is_not_nan()).head(60).vstack(frame.tail(60))
    sample = sample.filter(pl.col("score").is_not_nan())
    n = sample.height
    grad = np.exp(0.5 * np.nan_to_num(sample["score"].to_numpy()) + rng.normal(0, 0.5, n))
    examples = pl.DataFrame(
        {
            "uid": sample["uid"],
            "rank": sample["rank"],
            "half": np.where(np.arange(n) % 2 == 0, "choose", "hold_out"),
            "score": sample["score"],
            "n_question": sample["n_question"],
            "loss": rng.uniform(0.5, 2.0, n),
            "grad_norm": pl.Series(grad).set(pl.Series([False] * (n - 1) + [True]), None),
            "grad_mlp_in": rng.uniform(0, 1, n),
        }
    )
    atomic_write_parquet(examples, root / "validate.parquet")
    validate = {
        "primary_target": "grad_norm",
        "targets": {"grad_norm": "whole-model gradient norm of the reference answer's loss"},
        "correlations": correlations,
        "confounds": [
            {
                "feature": "c_intra@8",
                "covariate": "n_question",
                "rho": -0.61,
                "ci_low": -0.7,
                "ci_high": -0.5,
                "n": 120,
            },
        ],
        "split": {
            "chosen_feature": "c_intra@15",
            "choose_rho": 0.36,
            "hold_out_rho": 0.21,
            "hold_out_ci": [0.03, 0.38],
            "holds": True,
        },
        "recommendation": {"metric": "angles", "layer": 14, "w_intra": 1.0, "w_inter": 0.0},
        "why": "c_intra at layer 15 tracked grad_norm on the choose half <and> held out.",
    }
    atomic_write_json(validate, root / "validate.json")
