"""The plain-PyTorch paths of the segment reduction and the float64 reference.

``segment_unit_sums`` (padded batches, [B, S, T] masks: the CPU path) and ``range_unit_sums``
(token ranges over [N, d]: the reference of the Triton kernel in
:mod:`anglecurate.scoring.angles.kernel`) compute the same per-segment sums of unit vectors;
``angles_from_sums`` turns any path's sums into ``c_intra`` and ``c_inter``;
``naive_angles`` is the O(L^2) float64 reference every path is tested against. The maths
is in :mod:`anglecurate.scoring.angles`.
"""

from __future__ import annotations

import torch

# Same floor as torch.nn.functional.normalize: below it a vector is treated as zero.
NORM_EPS = 1e-12


def segment_unit_sums(hidden: torch.Tensor, segment_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum unit vectors and their squared norms over token segments of a padded batch.

    Args:
        hidden: [B, T, d] hidden states, any float dtype (bf16, fp16, fp32).
        segment_masks: [B, S, T] float32, 1.0 where token t belongs to segment s of
            prompt b, else 0.0 (padding and ignored tokens are 0 in every segment).

    Returns:
        sums: [B, S, d] float32 (float64 for float64 input), sum of u_i over each segment.
        sq_sums: [B, S] same dtype, sum of ||u_i||^2 over each segment (the token count
            when no hidden state is zero).
    """
    # fp32 accumulation for bf16/fp16/fp32 models (no copy for fp32); float64 stays float64.
    x = hidden if hidden.dtype == torch.float64 else hidden.float()
    segment_masks = segment_masks.to(x.dtype)
    norms = torch.linalg.vector_norm(x, dim=-1)  # [B, T]
    inv = 1.0 / norms.clamp_min(NORM_EPS)  # a zero vector gets a finite weight times zero
    # Scale the [B, S, T] masks by 1/||x_t|| instead of normalising x: one batched matmul
    # then sums the unit vectors of every segment without a [B, T, d] temporary.
    weights = segment_masks * inv.unsqueeze(1)
    sums = torch.bmm(weights, x)  # [B, S, d]
    unit_sq = (norms * inv).square()  # [B, T]: 1, or 0 for a zero vector
    sq_sums = torch.bmm(segment_masks, unit_sq.unsqueeze(-1)).squeeze(-1)  # [B, S]
    return sums, sq_sums


def range_unit_sums(
    x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum unit vectors and their squared norms over token ranges (plain PyTorch).

    Args:
        x: [N, d] hidden states, any float dtype.
        starts, ends: [S] integer; segment s is tokens [starts[s], ends[s]) (may be empty;
            segments must not overlap).

    Returns:
        sums: [S, d] float32 (float64 for float64 input); sq_sums: [S], as in
        :func:`segment_unit_sums`.
    """
    xf = x if x.dtype == torch.float64 else x.float()
    starts = starts.to(device=x.device, dtype=torch.long)
    lengths = (ends.to(device=x.device, dtype=torch.long) - starts).clamp_min(0)
    seg = torch.repeat_interleave(torch.arange(starts.numel(), device=x.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths  # position of each segment's first token in `seg`
    tokens = starts[seg] + torch.arange(seg.numel(), device=x.device) - first[seg]
    picked = xf[tokens]
    norms = torch.linalg.vector_norm(picked, dim=-1)
    inv = 1.0 / norms.clamp_min(NORM_EPS)
    sums = torch.zeros((starts.numel(), x.shape[1]), dtype=xf.dtype, device=x.device)
    sums.index_add_(0, seg, picked * inv.unsqueeze(-1))
    sq_sums = torch.zeros(starts.numel(), dtype=xf.dtype, device=x.device)
    sq_sums.index_add_(0, seg, (norms * inv).square())
    return sums, sq_sums


def angles_from_sums(
    prefix_sum: torch.Tensor,
    question_sum: torch.Tensor,
    question_sq: torch.Tensor,
    n_prefix: torch.Tensor,
    n_question: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean pairwise cosines from segment sums; finished in float64.

    Args:
        prefix_sum, question_sum: [..., d] sums of unit vectors (any float dtype).
        question_sq: [...] sum of ||u_i||^2 over the question.
        n_prefix, n_question: [...] token counts (integer or float).

    Returns:
        c_intra, c_inter: [...] float64; NaN where undefined (see module docstring).
    """
    s_q = question_sum.double()
    s_p = prefix_sum.double()
    n_q = n_question.double()
    n_p = n_prefix.double()
    nan = torch.full_like(n_q, float("nan"))
    intra_pairs = n_q * (n_q - 1)
    intra_num = (s_q * s_q).sum(-1) - question_sq.double()
    c_intra = torch.where(intra_pairs > 0, intra_num / intra_pairs.clamp_min(1), nan)
    inter_pairs = n_q * n_p
    c_inter = torch.where(inter_pairs > 0, (s_q * s_p).sum(-1) / inter_pairs.clamp_min(1), nan)
    return c_intra, c_inter


def naive_angles(hidden: torch.Tensor, n_prefix: int, n_question: int) -> tuple[float, float]:
    """Reference: explicit cosine matrix of one prompt, in float64. O(L^2); tests only.

    Args:
        hidden: [L, d] hidden states of one prompt (prefix, question, suffix in order).
        n_prefix, n_question: segment lengths in tokens.

    Returns:
        (c_intra, c_inter) as Python floats, NaN where undefined.
    """
    x = hidden.double()
    units = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    cos = units @ units.T
    q = slice(n_prefix, n_prefix + n_question)
    block = cos[q, q]
    off_diag = ~torch.eye(n_question, dtype=torch.bool)
    c_intra = block[off_diag].mean().item() if n_question >= 2 else float("nan")
    c_inter = cos[q, :n_prefix].mean().item() if n_prefix and n_question else float("nan")
    return c_intra, c_inter
