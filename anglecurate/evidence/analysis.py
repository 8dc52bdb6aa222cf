"""The evidence `validate` reports: which stored features predict a training target, and
whether the best of them survives the protections against a lucky pick.

Pure computation on per-example arrays (anglecurate.stats.correlation does the statistics):

1. confounds first: every feature's Spearman with question length, difficulty and loss,
   so a user sees when the score is a proxy for one of them;
2. per feature, against the target: Spearman with a bootstrap interval, partial Spearman
   controlling for length (and difficulty, and loss for a gradient target), and a
   family-wise (max-statistic permutation) p-value over all features;
3. choose on one half, report on the other: the layer-wise feature with the largest |rho|
   on the "choose" half, signed, is re-measured on the disjoint "hold-out" half; a
   recommendation is made only when its held-out interval excludes 0 in the same direction.

A negative link is a valid ranking too (rank by -feature); the recommendation's weights
carry the sign.
"""

from __future__ import annotations

import math
import re

import numpy as np

from anglecurate.stats import correlation as stats

FEATURE = re.compile(r"^(c_intra|c_inter|combined)@(\d+)$")
COMPONENT = {"c_intra": "intra", "c_inter": "inter", "combined": "combined"}


def layer_features(
    intra: np.ndarray, inter: np.ndarray, layers: list[int], w_intra: float, w_inter: float
) -> dict[str, np.ndarray]:
    """``c_intra@L``, ``c_inter@L`` and ``combined@L`` (w_intra c_intra + w_inter c_inter) for
    every scored layer L. intra, inter: [n, len(layers)] float."""
    features = {}
    for k, layer in enumerate(layers):
        features[f"c_intra@{layer}"] = intra[:, k]
        features[f"c_inter@{layer}"] = inter[:, k]
        features[f"combined@{layer}"] = w_intra * intra[:, k] + w_inter * inter[:, k]
    return features


def _f(x: float) -> float | None:
    """JSON-safe: NaN becomes null."""
    return None if x is None or not math.isfinite(x) else float(x)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> dict:
    """Spearman ``rho``, ``p`` and ``n``, JSON-safe."""
    rho, p, n = stats.spearman(x, y)
    return {"rho": _f(rho), "p": _f(p), "n": n}


def _describe(name: str) -> tuple[int | None, str]:
    match = FEATURE.match(name)
    if match:
        return int(match.group(2)), COMPONENT[match.group(1)]
    return None, name


def confounds(
    features: dict[str, np.ndarray], covariates: dict[str, np.ndarray], seed: int, n_boot: int
) -> list:
    """Spearman of every feature with every covariate (length, difficulty, loss)."""
    rows = []
    for name, x in features.items():
        for cov, z in covariates.items():
            rho, _, n = stats.spearman(x, z)
            lo, hi = stats.spearman_ci(x, z, n_resamples=n_boot, seed=seed)
            rows.append(
                {
                    "feature": name,
                    "covariate": cov,
                    "rho": _f(rho),
                    "ci_low": _f(lo),
                    "ci_high": _f(hi),
                    "n": n,
                }
            )
    return rows


def correlations(
    features: dict[str, np.ndarray],
    target: np.ndarray,
    target_name: str,
    controls: dict[str, np.ndarray],
    seed: int,
    n_boot: int,
    n_perm: int,
) -> list[dict]:
    """One row per feature: rho, interval, p, family-wise p, partial rho given ``controls``.

    The family of the max-statistic test is the features defined on every example the
    target is (all layer-wise ones, in practice): one mostly-NaN feature, such as the
    authors' value on short prompts, would otherwise shrink the test to the few rows where
    it is defined. Features outside the family get ``p_fwer`` null.
    """
    names = list(features)
    defined = np.isfinite(target)
    family = [k for k in names if np.isfinite(features[k][defined]).all()]
    matrix = np.stack([features[k] for k in family]) if family else np.empty((0, len(target)))
    p_family = dict(
        zip(family, stats.max_stat_pvalues(matrix, target, n_permutations=n_perm, seed=seed), strict=True)
    )
    covariates = np.stack(list(controls.values()), axis=1) if controls else np.empty((len(target), 0))
    rows = []
    for name in names:
        x = features[name]
        rho, p, n = stats.spearman(x, target)
        lo, hi = stats.spearman_ci(x, target, n_resamples=n_boot, seed=seed)
        partial, partial_p, _ = stats.partial_spearman(x, target, covariates)
        layer, component = _describe(name)
        rows.append(
            {
                "feature": name,
                "layer": layer,
                "component": component,
                "target": target_name,
                "rho": _f(rho),
                "ci_low": _f(lo),
                "ci_high": _f(hi),
                "p": _f(p),
                "p_fwer": _f(p_family.get(name, math.nan)),
                "partial_rho": _f(partial),
                "partial_p": _f(partial_p),
                "controls": list(controls),
                "n": n,
            }
        )
    return rows


def split_check(
    features: dict[str, np.ndarray], target: np.ndarray, choose: np.ndarray, seed: int, n_boot: int
) -> dict:
    """Pick the layer-wise feature with the largest |rho| on the ``choose`` half (bool [n])
    and measure it, signed, on the other half."""
    best, best_rho = None, 0.0
    for name, x in features.items():
        if not FEATURE.match(name):
            continue
        rho, _, _ = stats.spearman(x[choose], target[choose])
        if math.isfinite(rho) and abs(rho) > abs(best_rho):
            best, best_rho = name, rho
    if best is None:
        return {
            "chosen_feature": None,
            "holds": False,
            "n_choose": int(choose.sum()),
            "n_hold_out": int((~choose).sum()),
        }
    sign = 1.0 if best_rho > 0 else -1.0
    held = ~choose
    rho, p, n = stats.spearman(sign * features[best][held], target[held])
    lo, hi = stats.spearman_ci(sign * features[best][held], target[held], n_resamples=n_boot, seed=seed)
    return {
        "chosen_feature": best,
        "sign": sign,
        "choose_rho": _f(best_rho),
        "hold_out_rho": _f(rho),  # of sign x feature: positive when the chosen direction holds
        "hold_out_ci": [_f(lo), _f(hi)],
        "hold_out_p": _f(p),
        "holds": bool(math.isfinite(lo) and lo > 0),
        "n_choose": int(choose.sum()),
        "n_hold_out": n,
    }


def recommend(split: dict, w_intra: float, w_inter: float, target_name: str) -> tuple[dict | None, str]:
    """The ranking choice the split supports, and why (or why none)."""
    name = split.get("chosen_feature")
    if name is None:
        return None, f"no layer-wise feature has a defined correlation with {target_name} on the choose half"
    layer, component = _describe(name)
    sign = split["sign"]
    ci = split["hold_out_ci"]
    direction = "higher" if sign > 0 else "lower"
    held = (
        f"{name} ({direction} value, larger {target_name}) was the strongest layer-wise feature on "
        f"{split['n_choose']} examples (rho {split['choose_rho']:+.2f}); on the {split['n_hold_out']} "
        f"held-out examples its rho is {_signed(split['hold_out_rho'])} [{_signed(ci[0])}, {_signed(ci[1])}]"
    )
    if not split["holds"]:
        return None, held + ": the interval includes 0, so no layer is recommended; keep the current ranking"
    weights = {"intra": (sign, 0.0), "inter": (0.0, sign), "combined": (sign * w_intra, sign * w_inter)}[
        component
    ]
    choice = {"metric": "angles", "layer": layer, "w_intra": weights[0], "w_inter": weights[1]}
    return choice, held + ": it holds, so rank by it (`anglecurate rank OUT --from-validate`)"


def _signed(x: float | None) -> str:
    return "nan" if x is None else f"{x:+.2f}"
