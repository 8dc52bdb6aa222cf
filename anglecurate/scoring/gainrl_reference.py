"""The GAIN-RL authors' per-prompt score, reproduced exactly, without the L x L matrix.

Their script (for researchers who need the paper's numbers: ``score --metric
gainrl-reference``) computes, over all L tokens of the last layer's MLP
input, with P a prefix and S a suffix length in tokens (theirs: 110 and 6)::

    M = cos * tril(ones(L, L), diagonal=1)          # cos[i, j] kept where j <= i + 1
    val = M[P:-S][P:-S].mean() + 8 * M[P:-S][:P].mean()

Both slices cut rows only (chained slicing), every column stays, masked zeros count in the
means, and an empty slice gives NaN: the first term is NaN when L < 2P + 2S + 1, and
``-S`` with S = 0 is an empty slice (Python's ``x[P:-0]``), as in their code.

Row i of M sums to <u_i, U_{min(i+1, L-1)}> with U_k the prefix sum of the unit vectors
u_0..u_k, so every row sum costs O(d) after one O(L d) prefix sum: O(L d) time and memory
instead of O(L^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from anglecurate.scoring.angles.unit_sums import NORM_EPS


@dataclass(frozen=True)
class ReferenceSpec:
    """Where and how `score --metric gainrl-reference` computes the authors' value: the
    layer whose MLP input it reads, and fixed P and S in tokens (None: each prompt's own
    template prefix and suffix, which is what the authors' hard-coded 110 and 6 were for
    their template)."""

    layer: int
    prefix: int | None = None
    suffix: int | None = None


def gainrl_reference_score(hidden: torch.Tensor, prefix: int, suffix: int) -> float:
    """The authors' ``val`` for one prompt.

    Args:
        hidden: [L, d] hidden states of one prompt, any float dtype (computed in fp32).
        prefix, suffix: P and S in tokens (non-negative).

    Returns:
        The score as a Python float; NaN where the authors' code gives NaN.
    """
    return float(gainrl_reference_values(hidden, [0], [hidden.shape[0]], [prefix], [suffix])[0])


def gainrl_reference_values(
    x: torch.Tensor, starts: list[int], lengths: list[int], prefixes: list[int], suffixes: list[int]
) -> torch.Tensor:
    """The authors' value for every prompt of a batch, with one host sync at the end.

    Args:
        x: [N, d] hidden states (a packed sequence, or a padded batch viewed flat).
        starts, lengths: prompt p is tokens [starts[p], starts[p] + lengths[p]) of ``x``.
        prefixes, suffixes: P and S of each prompt, in tokens (non-negative).

    Returns:
        [P] float64 on the CPU; NaN where the authors' code gives NaN.
    """
    if min([*prefixes, *suffixes], default=0) < 0:
        raise ValueError("prefix and suffix lengths must be non-negative")
    values = [
        _one_prompt(x[start : start + length], prefix, suffix)
        for start, length, prefix, suffix in zip(starts, lengths, prefixes, suffixes, strict=True)
    ]
    return torch.stack(values).cpu() if values else torch.empty(0, dtype=torch.float64)


def _one_prompt(hidden: torch.Tensor, prefix: int, suffix: int) -> torch.Tensor:
    length = hidden.shape[0]
    x = hidden.float()
    units = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    prefix_sums = units.cumsum(0)  # [L, d]
    last = torch.clamp(torch.arange(length, device=x.device) + 1, max=length - 1)
    row_sums = (units * prefix_sums[last]).sum(-1).double()  # [L]: row sums of M
    outer = range(length)[prefix:-suffix]  # M[P:-S], Python slice semantics (-0 is empty)
    first = _row_mean(row_sums, outer[prefix:-suffix], length)
    second = _row_mean(row_sums, outer[:prefix], length)
    return first + 8.0 * second


def _row_mean(row_sums: torch.Tensor, rows: range, length: int) -> torch.Tensor:
    """Mean of M over ``rows`` and all ``length`` columns; NaN for no rows (torch's empty mean)."""
    if len(rows) == 0 or length == 0:
        return torch.tensor(math.nan, dtype=torch.float64, device=row_sums.device)
    return row_sums[rows.start : rows.stop].sum() / (len(rows) * length)
