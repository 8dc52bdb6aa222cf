"""Every segment reduction (padded masks, token ranges, the Triton kernel) against the naive
float64 O(L^2) reference, on random ragged batches; the kernel against its PyTorch
reference, packed and padded, with per-dtype tolerances."""

from __future__ import annotations

import math

import pytest
import torch

from anglecurate.scoring.angles.unit_sums import (
    angles_from_sums,
    naive_angles,
    range_unit_sums,
    segment_unit_sums,
)

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float64: 1e-10}
PATHS = ["masks", "ranges", "triton"]
# The kernel runs on the GPU where there is one, else in Triton's interpreter (conftest).
KERNEL_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_kernel(x, starts, ends):
    """The Triton kernel on KERNEL_DEVICE; results back on the CPU."""
    from anglecurate.scoring.angles.kernel import SegmentPlan, segment_unit_sums_triton

    x = x.to(KERNEL_DEVICE)
    sums, sq = segment_unit_sums_triton(x, SegmentPlan.build(starts, ends, KERNEL_DEVICE))
    return sums.cpu(), sq.cpu()


def reduce(path, hidden, masks):
    """Prefix/question sums of a padded batch by one implementation: ([B, 2, d], [B, 2])."""
    if path == "masks":
        return segment_unit_sums(hidden, masks)
    b, width, d = hidden.shape
    present = masks.bool()
    starts = (present.float().argmax(-1) + torch.arange(b).unsqueeze(1) * width).flatten()
    ends = starts + present.sum(-1).flatten()
    flat = hidden.reshape(b * width, d)
    if path == "ranges":
        sums, sq = range_unit_sums(flat, starts, ends)
    else:
        if hidden.dtype == torch.float64:
            pytest.skip("the kernel takes bf16, fp16 and fp32")
        pytest.importorskip("triton")
        sums, sq = run_kernel(flat, starts, ends)
    return sums.view(b, 2, d), sq.view(b, 2)


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


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("d", [1, 7, 64, 129])
def test_every_path_matches_naive_on_ragged_batches(path, dtype, d):
    lengths = [(1, 1, 0), (3, 2, 1), (0, 5, 2), (17, 1, 3), (9, 33, 0), (40, 61, 5), (2, 0, 1)]
    hidden, masks = _ragged_batch(lengths, d, dtype, seed=d)
    sums, sq = reduce(path, hidden, masks)
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


@pytest.mark.parametrize("path", PATHS)
def test_undefined_cases_are_nan(path):
    hidden, masks = _ragged_batch([(0, 1, 0), (4, 1, 0), (0, 3, 0)], 8, torch.float32)
    sums, sq = reduce(path, hidden, masks)
    counts = masks.sum(-1)
    intra, inter = angles_from_sums(sums[:, 0], sums[:, 1], sq[:, 1], counts[:, 0], counts[:, 1])
    assert torch.isnan(intra[0]) and torch.isnan(inter[0])  # one token, no prefix
    assert torch.isnan(intra[1]) and not torch.isnan(inter[1])  # one question token
    assert not torch.isnan(intra[2]) and torch.isnan(inter[2])  # no prefix


@pytest.mark.parametrize("path", PATHS)
def test_zero_vectors_count_as_cosine_zero(path):
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]]])  # middle token is zero
    masks = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    sums, sq = reduce(path, x, masks)
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


def _packed(lengths, d, dtype, seed):
    """A packed [N, d] sequence (with gaps: suffixes) and each prompt's two token ranges."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(p + q + s for p, q, s in lengths)
    x = (torch.randn(total, d, generator=gen) + 2.0 * torch.randn(d, generator=gen)).to(dtype)
    starts, ends, at = [], [], 0
    for p, q, s in lengths:
        starts += [at, at + p]
        ends += [at + p, at + p + q]
        at += p + q + s
    return x, torch.tensor(starts), torch.tensor(ends)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_matches_its_reference_on_long_ragged_packed_input(dtype):
    tol = 2e-5  # both accumulate in fp32 from the same rounded inputs
    pytest.importorskip("triton")
    from anglecurate.scoring.angles.kernel import CHUNK_T

    # Segments of length 1, empty ones, ones just over a chunk, and one of many chunks;
    # an odd hidden size spanning several column tiles.
    lengths = [(1, 1, 0), (0, 3, 1), (CHUNK_T + 1, 1, 2), (5, 0, 0), (3, 4 * CHUNK_T + 7, 1), (2, 2, 9)]
    x, starts, ends = _packed(lengths, 300, dtype, seed=7)
    sums, sq = run_kernel(x, starts, ends)
    ref_sums, ref_sq = range_unit_sums(x, starts, ends)
    assert sums.dtype == torch.float32 and sums.shape == (12, 300)
    scale = (ends - starts).clamp_min(1).unsqueeze(-1).float()  # sums grow with length
    assert torch.allclose(sums / scale, ref_sums / scale, atol=tol, rtol=0)
    assert torch.allclose(sq, ref_sq, atol=tol * 10)
    assert sq.tolist() == pytest.approx((ends - starts).float().tolist(), abs=1e-3)
    again, _ = run_kernel(x, starts, ends)
    assert torch.equal(again, sums)  # no atomics: bit-identical on every run


def test_kernel_backend_dispatch(monkeypatch):
    from anglecurate.scoring.angles.dispatch import kernel_backend

    monkeypatch.delenv("ANGLECURATE_KERNEL", raising=False)
    assert kernel_backend(torch.device("cpu")) == "torch"
    monkeypatch.setenv("ANGLECURATE_KERNEL", "triton")
    assert kernel_backend(torch.device("cpu")) == "triton"
