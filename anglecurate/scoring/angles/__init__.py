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

Three implementations of the same reduction, one dispatch point (``dispatch.reduce_segments``):

- ``segment_unit_sums``: padded batches with [B, S, T] segment masks, one batched matmul
  (the CPU path; measured in docs/perf.md).
- ``range_unit_sums``: segments as token ranges over a [N, d] tensor (a packed sequence,
  or a padded batch viewed flat), plain PyTorch; the reference of the Triton kernel.
- ``kernel.segment_unit_sums_triton``: the same contract as a Triton kernel (the CUDA
  path), deterministic, one read of the input.

``naive_angles`` is the float64 O(L^2) reference all of them are tested against.
``ANGLECURATE_KERNEL=torch|triton`` overrides the choice (tests force either).

Modules:

    unit_sums  the PyTorch paths and the float64 reference
    kernel     Triton; imports only the shared constant from ``unit_sums``
    dispatch   the one point that picks the path
"""
