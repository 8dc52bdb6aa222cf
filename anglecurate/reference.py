"""The GAIN-RL authors' per-prompt score, reproduced exactly, without the L x L matrix.

Their script (for researchers who need the paper's numbers; issue 4 wires it into
``score --metric gainrl-reference``) computes, over all L tokens of the last layer's MLP
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

import torch

from anglecurate.angles import NORM_EPS


def gainrl_reference_score(hidden: torch.Tensor, prefix: int, suffix: int) -> float:
    """The authors' ``val`` for one prompt.

    Args:
        hidden: [L, d] hidden states of one prompt, any float dtype (computed in fp32).
        prefix, suffix: P and S in tokens (non-negative).

    Returns:
        The score as a Python float; NaN where the authors' code gives NaN.
    """
    if prefix < 0 or suffix < 0:
        raise ValueError("prefix and suffix lengths must be non-negative")
    length = hidden.shape[0]
    x = hidden.float()
    units = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    prefix_sums = units.cumsum(0)  # [L, d]
    last = torch.clamp(torch.arange(length) + 1, max=length - 1)
    row_sums = (units * prefix_sums[last]).sum(-1)  # [L]: row sums of M
    outer = range(length)[prefix:-suffix]  # M[P:-S], Python slice semantics (-0 is empty)
    first = _row_mean(row_sums, outer[prefix:-suffix], length)
    second = _row_mean(row_sums, outer[:prefix], length)
    return first + 8.0 * second


def _row_mean(row_sums: torch.Tensor, rows: range, length: int) -> float:
    """Mean of M over ``rows`` and all ``length`` columns; NaN for no rows (torch's empty mean)."""
    if len(rows) == 0 or length == 0:
        return math.nan
    return float(row_sums[rows.start : rows.stop].sum()) / (len(rows) * length)
