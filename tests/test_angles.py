"""The fused segment reduction against the naive float64 O(L^2) reference."""

from __future__ import annotations

import math

import pytest
import torch

from anglecurate.angles import angles_from_sums, naive_angles, reduce_segments, segment_unit_sums

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float64: 1e-10}


def _ragged_batch(lengths, d, dtype, seed=0):
    """Random prompts of (prefix, question, suffix) lengths, right-padded into one batch."""
    gen = torch.Generator().manual_seed(seed)
    width = max(sum(x) for x in lengths)
    hidden = torch.randn(len(lengths), width, d, generator=gen).to(dtype)
    # A shared direction makes cosines large and positive, as in real hidden states.
    hidden = hidden + 2.0 * torch.randn(d, generator=gen).to(dtype)
    masks = torch.zeros(len(lengths), 2, width)
    for b, (p, q, _s) in enumerate(lengths):
        masks[b, 0, :p] = 1
        masks[b, 1, p : p + q] = 1
    return hidden, masks


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("d", [1, 7, 64, 129])
def test_fused_matches_naive_on_ragged_batches(dtype, d):
    lengths = [(1, 1, 0), (3, 2, 1), (0, 5, 2), (17, 1, 3), (9, 33, 0), (40, 61, 5), (2, 0, 1)]
    hidden, masks = _ragged_batch(lengths, d, dtype, seed=d)
    sums, sq = reduce_segments(hidden, masks)
    counts = masks.sum(-1)
    c_intra, c_inter = angles_from_sums(sums[:, 0], sums[:, 1], sq[:, 1], counts[:, 0], counts[:, 1])
    for b, (p, q, s) in enumerate(lengths):
        # The reference sees the same rounded inputs, so only accumulation order differs.
        ref_intra, ref_inter = naive_angles(hidden[b, : p + q + s], p, q)
        for got, want in ((c_intra[b].item(), ref_intra), (c_inter[b].item(), ref_inter)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, abs=TOLERANCE[dtype] * max(1, q))


def test_undefined_cases_are_nan():
    hidden, masks = _ragged_batch([(0, 1, 0), (4, 1, 0), (0, 3, 0)], 8, torch.float32)
    sums, sq = segment_unit_sums(hidden, masks)
    counts = masks.sum(-1)
    intra, inter = angles_from_sums(sums[:, 0], sums[:, 1], sq[:, 1], counts[:, 0], counts[:, 1])
    assert torch.isnan(intra[0]) and torch.isnan(inter[0])  # one token, no prefix
    assert torch.isnan(intra[1]) and not torch.isnan(inter[1])  # one question token
    assert not torch.isnan(intra[2]) and torch.isnan(inter[2])  # no prefix


def test_zero_vectors_count_as_cosine_zero():
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]]])  # middle token is zero
    masks = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    sums, sq = segment_unit_sums(x, masks)
    assert sq[0, 1].item() == pytest.approx(2.0)
    intra, _ = angles_from_sums(sums[:, 0], sums[:, 1], sq[:, 1], torch.tensor([0.0]), torch.tensor([3.0]))
    # pairs: (0,2) cos 1 twice; four pairs with the zero vector at 0 -> 2 / 6
    assert intra.item() == pytest.approx(2 / 6)
    assert naive_angles(x[0], 0, 3)[0] == pytest.approx(2 / 6)


def test_identical_tokens_give_one_and_opposite_give_minus_one():
    v = torch.randn(16)
    x = torch.stack([v, v, v, -v]).unsqueeze(0)
    masks = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 1.0, 0]]])
    sums, sq = segment_unit_sums(x, masks)
    intra, inter = angles_from_sums(
        sums[:, 0], sums[:, 1], sq[:, 1], torch.tensor([1.0]), torch.tensor([2.0])
    )
    assert intra.item() == pytest.approx(1.0, abs=1e-6)
    assert inter.item() == pytest.approx(1.0, abs=1e-6)
    masks = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 1.0]]])
    sums, sq = segment_unit_sums(x, masks)
    _, inter = angles_from_sums(sums[:, 0], sums[:, 1], sq[:, 1], torch.tensor([1.0]), torch.tensor([1.0]))
    assert inter.item() == pytest.approx(-1.0, abs=1e-6)
