"""The authors' per-prompt formula in O(L d) against a literal transcription of their code."""

from __future__ import annotations

import math

import pytest
import torch

from anglecurate.scoring.gainrl_reference import gainrl_reference_score


def naive(hidden: torch.Tensor, prefix: int, suffix: int) -> float:
    """Their code, transcribed: the L x L matrix, chained row slices, masked zeros counted."""
    u = torch.nn.functional.normalize(hidden.float(), dim=-1)
    length = len(u)
    m = (u @ u.T) * torch.tril(torch.ones(length, length), diagonal=1)
    return (m[prefix:-suffix][prefix:-suffix].mean() + 8 * m[prefix:-suffix][:prefix].mean()).item()


@pytest.mark.parametrize(
    ("length", "prefix", "suffix"),
    [
        (300, 110, 6),
        (240, 110, 6),
        (226, 110, 6),
        (227, 110, 6),
        (100, 110, 6),
        (50, 3, 0),
        (1, 0, 1),
        (9, 2, 1),
    ],
)
@pytest.mark.parametrize("d", [1, 17, 64])
def test_matches_the_authors_code(length, prefix, suffix, d):
    gen = torch.Generator().manual_seed(length * 31 + d)
    hidden = torch.randn(length, d, generator=gen) + 1.5 * torch.randn(d, generator=gen)
    got, want = gainrl_reference_score(hidden, prefix, suffix), naive(hidden, prefix, suffix)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-5)


def test_nan_exactly_where_the_authors_code_gives_nan():
    hidden = torch.randn(400, 8)
    # the first term needs at least 2P + 2S + 1 tokens: 2 * 110 + 2 * 6 + 1 = 233
    assert math.isnan(gainrl_reference_score(hidden[:232], 110, 6))
    assert not math.isnan(gainrl_reference_score(hidden[:233], 110, 6))
    assert math.isnan(gainrl_reference_score(hidden, 110, 0))  # x[P:-0] is empty in Python
    with pytest.raises(ValueError):
        gainrl_reference_score(hidden, -1, 6)
