"""How well the `calibrated` arm's predictor ranks the training rows it never saw.

A pilot with both measured arms holds two calibrations of the same training rows:
``P/calibration/calibrated`` (k rollouts on a 256-row sample, the predictor fitted on them)
and ``P/calibration/pass-rate`` (k rollouts of every row; the sample's own rollouts reused).
calibrate.json's held-out quality is measured out of fold on the 256 sampled rows; this
measures it on the rest, the rows the arm actually orders by prediction alone, against their
measured pass rates. The baselines are fitted the same way on the same sample, one feature
each, so each learns its own sign.

    python benchmarks/pilot_predictor_check.py pilot-arith

prints a Markdown table (docs/pilot.md quotes it), the mean measured pass rate and, for data
with a ``level`` column (``builtin:arithmetic``), the pass rate by level.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.scoring.features import read_prefill_features
from anglecurate.stats.learnability import fit_learnability, predictor_quality


def _rates(folder: Path, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured pass rate [n] (NaN where not measured), k [n] and has_variance [n] bool of
    ``folder``'s rollouts, aligned to the feature rows ``index``."""
    columns = ["row_index", "pass_rate", "k", "has_variance"]
    rollouts = pl.read_parquet(folder / "calibrate.parquet", columns=columns)
    where = {int(r): i for i, r in enumerate(index.tolist())}
    at = np.array([where[int(r)] for r in rollouts["row_index"]], dtype=np.int64)
    rate, k = np.full(index.size, np.nan), np.zeros(index.size, dtype=np.int64)
    varies = np.zeros(index.size, dtype=bool)
    rate[at], k[at], varies[at] = (rollouts[c].to_numpy() for c in columns[1:])
    return rate, k, varies


def _full_fit(x: np.ndarray, rate: np.ndarray, k: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """p_pass [n] of every row from the fit on the sampled rows. Only the prediction is used
    here, so the fit gets its one required baseline and few bootstrap resamples."""
    return fit_learnability(x, rate, k, {"n_question": reference}, n_resamples=10).p_pass


def main(pilot: Path) -> None:
    calibrated, every_row = pilot / "calibration" / "calibrated", pilot / "calibration" / "pass-rate"
    inputs = read_prefill_features(calibrated)
    sample_rate, sample_k, _ = _rates(calibrated, inputs.row_index)
    truth, truth_k, truth_varies = _rates(every_row, inputs.row_index)
    unseen = (sample_k == 0) & (truth_k > 0)
    sampled = int((sample_k > 0).sum())
    print(f"rows: {inputs.row_index.size}; sampled {sampled}; unseen and measured {int(unseen.sum())}")
    candidates = {"predictor": inputs.features}
    candidates |= {name: b.reshape(-1, 1) for name, b in inputs.baselines.items()}
    measured, has_variance = truth[unseen], truth_varies[unseen]
    print("\n| order | features | Spearman with measured pass rate [95%] | AUROC for reward variance [95%] |")
    print("|---|---|---|---|")
    for name, x in candidates.items():
        p = _full_fit(x, sample_rate, sample_k, inputs.baselines["n_question"])[unseen]
        q = predictor_quality(name, x.shape[1], p, measured, has_variance)
        (lo, hi), (alo, ahi) = q.spearman_ci, q.auroc_ci
        rho, area = f"{q.spearman:.2f} [{lo:.2f}, {hi:.2f}]", f"{q.auroc:.2f} [{alo:.2f}, {ahi:.2f}]"
        print(f"| {name} | {q.features} | {rho} | {area} |")
    rows = pl.read_parquet(
        every_row / "calibrate.parquet", columns=["row_index", "pass_rate", "has_variance"]
    )
    print(
        f"\nevery row: mean pass rate {rows['pass_rate'].mean():.3f}, zero-variance share "
        f"{1 - rows['has_variance'].cast(pl.Float64).mean():.3f}"
    )
    ranked = pl.scan_parquet(calibrated / "ranked")
    if "level" not in ranked.collect_schema().names():  # builtin:arithmetic's difficulty grade
        return
    levels = ranked.select("row_index", "level").collect()
    table = (
        rows.join(levels, on="row_index")
        .group_by("level")
        .agg(
            rows=pl.len(),
            pass_rate=pl.col("pass_rate").mean(),
            zero_variance=1 - pl.col("has_variance").cast(pl.Float64).mean(),
        )
        .sort("level")
    )
    print("\n| level | rows | mean pass rate | zero-variance share |\n|---|---|---|---|")
    for r in table.iter_rows(named=True):
        print(f"| {r['level']} | {r['rows']} | {r['pass_rate']:.3f} | {r['zero_variance']:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/pilot_predictor_check.py PILOT_FOLDER")
    main(Path(sys.argv[1]))
