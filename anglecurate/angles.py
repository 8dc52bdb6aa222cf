"""Angle concentration from per-segment sums of unit vectors.

For token hidden states x_i of one prompt, let u_i = x_i / ||x_i|| (u_i = 0 for a zero
vector). Over a segment Q with sum S_Q = sum_i u_i and R_Q = sum_i ||u_i||^2:

    sum_{i != j in Q} cos(x_i, x_j) = ||S_Q||^2 - R_Q
    sum_{i in Q, j in P} cos(x_i, x_j) = <S_Q, S_P>

so the paper's mean pairwise cosines need only O(tokens x d) work and O(segments x d)
memory, never the L x L cosine matrix:

    c_intra = (||S_Q||^2 - R_Q) / (n_Q (n_Q - 1))     (NaN when n_Q < 2: no pairs)
    c_inter = <S_Q, S_P> / (n_Q n_P)                  (NaN when n_P = 0 or n_Q = 0)

A zero vector has no direction; it counts as a token whose cosine with every other token
is 0 (that is what u_i = 0 gives), so it dilutes the mean rather than producing NaN.

``segment_unit_sums`` is the fused reduction that runs inside the forward hook (one read of
the hidden states, fp32 accumulation whatever the model dtype). ``naive_angles`` is the
float64 O(L^2) reference the tests compare it with. ``reduce_segments`` is the one dispatch
point that picks the implementation.
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


def reduce_segments(hidden: torch.Tensor, segment_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch point for the segment reduction (see :func:`segment_unit_sums`).

    Only the batched-matmul path exists today; a device-specific kernel plugs in here.
    """
    return segment_unit_sums(hidden, segment_masks)


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
