"""Triton kernel: per-segment sums of unit vectors over a packed [N, d] hidden-state tensor.

Input: ``x`` [N, d] (bf16, fp16 or fp32; a packed sequence, or a padded batch viewed as
[B*T, d]) and S segments given as token ranges ``[starts[s], ends[s])`` that do not overlap.
Output, per segment: ``sums`` [S, d] fp32 = sum of u_i = x_i / ||x_i|| and ``sq`` [S] fp32
= sum of ||u_i||^2 (1 per token, 0 for a zero vector, which counts as a direction-less
token exactly as in :mod:`anglecurate.scoring.angles.unit_sums`).

Two launches, no atomics, so results do not depend on scheduling:

1. ``_chunk_partials``: one program per (segment, chunk of ``CHUNK_T`` tokens). It computes
   the chunk's token norms over d in ``BLOCK_D`` tiles, then re-reads the same tile
   (from L1/L2: a chunk is at most CHUNK_T x d) to accumulate x * (1 / ||x||) in fp32, and
   writes one partial row. HBM sees one read of the input.
2. ``_sum_partials``: one program per (segment, d tile) adds that segment's partials in
   chunk order: a fixed-order sum.

The work list (which chunk belongs to which segment) depends only on the segment lengths,
so it is built once per batch on the host (:class:`SegmentPlan`) and reused by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from anglecurate.scoring.angles.unit_sums import NORM_EPS

CHUNK_T = 64  # tokens per partial: enough programs for a GPU even with few long prompts
BLOCK_D = 128  # hidden-size tile


@dataclass(frozen=True)
class SegmentPlan:
    """The per-batch work list. All int32 on the device of the hidden states.

    starts, ends: [S] token ranges. chunk_seg, chunk_start: [C] segment and first token of
    each chunk. seg_lo, seg_hi: [S] range of a segment's chunks in the chunk list.
    """

    starts: torch.Tensor
    ends: torch.Tensor
    chunk_seg: torch.Tensor
    chunk_start: torch.Tensor
    seg_lo: torch.Tensor
    seg_hi: torch.Tensor

    @classmethod
    def build(cls, starts: torch.Tensor, ends: torch.Tensor, device: torch.device) -> SegmentPlan:
        starts = starts.to(torch.int64).cpu()
        ends = ends.to(torch.int64).cpu()
        n_chunks = (ends - starts + CHUNK_T - 1).clamp_min(0) // CHUNK_T  # 0 for an empty segment
        seg_hi = n_chunks.cumsum(0)
        seg_lo = seg_hi - n_chunks
        chunk_seg = torch.repeat_interleave(torch.arange(starts.numel()), n_chunks)
        within = torch.arange(chunk_seg.numel()) - seg_lo[chunk_seg]
        chunk_start = starts[chunk_seg] + within * CHUNK_T

        def dev(t):
            return t.to(device=device, dtype=torch.int32)

        return cls(dev(starts), dev(ends), dev(chunk_seg), dev(chunk_start), dev(seg_lo), dev(seg_hi))


@triton.jit
def _chunk_partials(
    x_ptr,
    stride_x,
    chunk_seg_ptr,
    chunk_start_ptr,
    ends_ptr,
    part_ptr,
    part_sq_ptr,
    d,
    eps,
    CHUNK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    c = tl.program_id(0)
    seg = tl.load(chunk_seg_ptr + c)
    start = tl.load(chunk_start_ptr + c)
    end = tl.minimum(tl.load(ends_ptr + seg), start + CHUNK)
    rows = start + tl.arange(0, CHUNK)
    row_ok = rows < end
    row_base = x_ptr + rows.to(tl.int64)[:, None] * stride_x
    sq = tl.zeros((CHUNK,), dtype=tl.float32)
    for d0 in range(0, d, BLOCK):
        cols = d0 + tl.arange(0, BLOCK)
        tile = tl.load(row_base + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < d), other=0.0)
        tile = tile.to(tl.float32)
        sq += tl.sum(tile * tile, axis=1)
    norm = tl.sqrt(sq)
    inv = 1.0 / tl.maximum(norm, eps)
    inv = tl.where(row_ok, inv, 0.0)
    unit_sq = (norm * inv) * (norm * inv)
    tl.store(part_sq_ptr + c, tl.sum(unit_sq, axis=0))
    for d0 in range(0, d, BLOCK):
        cols = d0 + tl.arange(0, BLOCK)
        col_ok = cols < d
        tile = tl.load(row_base + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        partial = tl.sum(tile.to(tl.float32) * inv[:, None], axis=0)
        tl.store(part_ptr + c.to(tl.int64) * d + cols, partial, mask=col_ok)


@triton.jit
def _sum_partials(part_ptr, part_sq_ptr, seg_lo_ptr, seg_hi_ptr, out_ptr, out_sq_ptr, d, BLOCK: tl.constexpr):
    seg = tl.program_id(0)
    tile = tl.program_id(1)
    lo = tl.load(seg_lo_ptr + seg)
    hi = tl.load(seg_hi_ptr + seg)
    cols = tile * BLOCK + tl.arange(0, BLOCK)
    col_ok = cols < d
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_sq = 0.0
    for c in range(lo, hi):  # chunk order: the same sum on every run
        # int32 offsets: c * d stays below 2^31 up to ~8M tokens at d = 16384
        acc += tl.load(part_ptr + c * d + cols, mask=col_ok, other=0.0)
        acc_sq += tl.load(part_sq_ptr + c)
    tl.store(out_ptr + seg.to(tl.int64) * d + cols, acc, mask=col_ok)
    if tile == 0:
        tl.store(out_sq_ptr + seg, acc_sq)


def segment_unit_sums_triton(x: torch.Tensor, plan: SegmentPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton path of :func:`~anglecurate.scoring.angles.unit_sums.range_unit_sums`.

    x [N, d] -> ([S, d], [S]) fp32.
    """
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError("x must be a 2-D tensor with contiguous rows")
    n_seg = plan.starts.numel()
    d = x.shape[1]
    n_chunks = plan.chunk_seg.numel()
    partials = torch.empty((max(n_chunks, 1), d), dtype=torch.float32, device=x.device)
    partial_sq = torch.empty((max(n_chunks, 1),), dtype=torch.float32, device=x.device)
    if n_chunks:
        _chunk_partials[(n_chunks,)](
            x,
            x.stride(0),
            plan.chunk_seg,
            plan.chunk_start,
            plan.ends,
            partials,
            partial_sq,
            d,
            NORM_EPS,
            CHUNK=CHUNK_T,
            BLOCK=BLOCK_D,
        )
    sums = torch.empty((n_seg, d), dtype=torch.float32, device=x.device)
    sq = torch.empty((n_seg,), dtype=torch.float32, device=x.device)
    if n_seg:
        _sum_partials[(n_seg, triton.cdiv(d, BLOCK_D))](
            partials, partial_sq, plan.seg_lo, plan.seg_hi, sums, sq, d, BLOCK=BLOCK_D
        )
    return sums, sq
