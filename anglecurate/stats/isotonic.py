"""A score "beyond what length explains": the residual of a monotone least-squares fit of
the score on prompt length (no parametric form is assumed). Used by the ranking's
``--length-control`` and by validate's and the report's confound checks."""

from __future__ import annotations

import numpy as np
from scipy import optimize


def isotonic_residuals(values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, dict]:
    """Residuals [n] float64 of values [n] float after a monotone least-squares fit on lengths [n].

    Both an increasing and a decreasing fit are tried; the one with the smaller squared error
    wins (increasing on a tie). Rows of equal length share one fitted value: the fit is done
    on the per-length means weighted by their counts, which is the same least-squares problem.
    Residuals are NaN where the value (or length) is NaN. info: {"direction": "increasing" |
    "decreasing" | "none", "r2": variance fraction explained (0.0 when values have none),
    "n": rows used}. With fewer than 2 usable rows the residual is the value minus the mean
    and direction is "none".
    """
    values = np.asarray(values, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.float64)
    if values.shape != lengths.shape or values.ndim != 1:
        raise ValueError(f"values and lengths must be 1-D of equal length: {values.shape}, {lengths.shape}")
    keep = np.isfinite(values) & np.isfinite(lengths)
    v = values[keep]
    resid = np.full(values.shape, np.nan)
    if v.size < 2:
        resid[keep] = v - v.mean() if v.size else v
        return resid, {"direction": "none", "r2": 0.0, "n": int(v.size)}
    uniq, inv, counts = np.unique(lengths[keep], return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=v) / counts
    best: tuple[float, str, np.ndarray] | None = None
    for direction in ("increasing", "decreasing"):
        fit = optimize.isotonic_regression(means, weights=counts, increasing=direction == "increasing").x
        sse = float(np.sum((v - fit[inv]) ** 2))
        if best is None or sse < best[0]:
            best = (sse, direction, fit)
    sse, direction, fit = best
    sst = float(np.sum((v - v.mean()) ** 2))
    r2 = 1.0 - sse / sst if sst > 0 else 0.0
    resid[keep] = v - fit[inv]
    return resid, {"direction": direction, "r2": float(r2), "n": int(v.size)}
