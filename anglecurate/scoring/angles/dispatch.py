"""The one dispatch point of the segment reduction: which path reduces a batch.

Padded batches with segment masks take the batched-matmul path, packed or flat batches the
token-range path, and CUDA batches the Triton kernel when Triton is installed
(``ANGLECURATE_KERNEL=torch|triton`` overrides the choice; tests force either).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from anglecurate.scoring.angles.unit_sums import range_unit_sums, segment_unit_sums


def kernel_backend(device: torch.device) -> str:
    """``triton`` on CUDA when Triton is installed, else ``torch``; ANGLECURATE_KERNEL overrides."""
    forced = os.environ.get("ANGLECURATE_KERNEL")
    if forced in ("torch", "triton"):
        return forced
    return "triton" if device.type == "cuda" and _triton_installed() else "torch"


@functools.cache
def _triton_installed() -> bool:  # asked once per batch: look it up once per process
    return importlib.util.find_spec("triton") is not None


def reduce_segments(hidden: torch.Tensor, segments) -> tuple[torch.Tensor, torch.Tensor]:
    """The dispatch point: per-prompt prefix/question sums of one layer's hidden states.

    Args:
        hidden: [B, T, d] (a padded batch, or B=1 for a packed one), any float dtype.
        segments: the batch's :class:`anglecurate.scoring.capture.DeviceSegments`.

    Returns:
        sums: [P, 2, d] float32; sq_sums: [P, 2] (P prompts; index 0 prefix, 1 question).
    """
    if segments.plan is not None:
        from anglecurate.scoring.angles.kernel import segment_unit_sums_triton

        sums, sq = segment_unit_sums_triton(hidden.reshape(-1, hidden.shape[-1]), segments.plan)
    elif segments.masks is not None:
        return segment_unit_sums(hidden, segments.masks)
    else:
        sums, sq = range_unit_sums(hidden.reshape(-1, hidden.shape[-1]), segments.starts, segments.ends)
    return sums.view(-1, 2, hidden.shape[-1]), sq.view(-1, 2)
