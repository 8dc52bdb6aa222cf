"""Training-time angle concentration: GAIN-RL's angle signal, measured in the trainer's own
forward pass for the loss.

GAIN-RL moves its window by ``n tanh(alpha (acc - beta)) + n tanh(alpha angle)`` where
``angle`` is the mean angle concentration of the epoch's training sequences (prompt plus
completion). :class:`AngleMeter` measures it without a second forward pass: a forward hook
on one decoder layer's feed-forward block reads that block's input, and a pre-hook on the
whole model reads the ``attention_mask`` of the same call, so each sequence is reduced over
its real tokens only (left-padded prompts, right-padded completions). The reduction is the
scorer's own: the mean pairwise cosine over distinct tokens, ``(||sum u||^2 - sum ||u||^2) /
(n (n - 1))``, exact and in float64 at the end (:mod:`anglecurate.scoring.angles`).

The meter counts only while :meth:`AngleMeter.measuring` is open, which the trainer opens
around its loss forward: generation, reference-model and old-log-prob passes are not
counted, nor is gradient checkpointing's recomputation (it runs in backward, after the
window closed). A batch the trainer feeds again (GRPO's ``num_iterations`` > 1) is counted
the first time only. Each process measures its own sequences; the trainer sums the totals
across processes before the next epoch is drawn.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from anglecurate.scoring.angles.unit_sums import angles_from_sums, segment_unit_sums


def sequence_angles(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine of each sequence's real tokens.

    Args:
        hidden: [B, T, d] one layer's hidden states, any float dtype.
        mask: [B, T] 1 for real tokens, 0 for padding (int, bool or float).

    Returns:
        [B] float64; NaN for a sequence with fewer than two real tokens.
    """
    masks = mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(1)  # [B, 1, T]
    sums, sq = segment_unit_sums(hidden.detach(), masks)
    count = masks.sum(-1).squeeze(1)
    empty = torch.zeros_like(count)
    c_intra, _ = angles_from_sums(torch.zeros_like(sums[:, 0]), sums[:, 0], sq[:, 0], empty, count)
    return c_intra


class AngleMeter:
    """Sums per-sequence angle concentrations at one layer during armed forward passes."""

    def __init__(self, layer: int):
        self.layer = layer
        self.total = 0.0  # sum of per-sequence angles since the last take()
        self.count = 0
        self._armed = False
        self._mask: torch.Tensor | None = None
        self._seen: dict[int, weakref.ref] = {}

    @contextlib.contextmanager
    def attached(self, model: nn.Module, block: nn.Module) -> Iterator[AngleMeter]:
        """Hooks on ``model`` (its forward's attention mask) and ``block`` (the feed-forward
        block of :attr:`layer`), removed on exit whatever happens."""

        def read_mask(_module, args, kwargs):
            if self._armed:
                self._mask = kwargs.get("attention_mask")

        def measure(_module, args, kwargs, _output):
            if not self._armed:
                return
            hidden = args[0] if args else next(iter(kwargs.values()))
            if hidden.dim() != 3:
                return
            mask = self._mask
            if mask is None or mask.dim() != 2 or tuple(mask.shape) != tuple(hidden.shape[:2]):
                mask = torch.ones(hidden.shape[:2], device=hidden.device)
            with torch.no_grad():
                angles = sequence_angles(hidden, mask)
            finite = angles[torch.isfinite(angles)]
            self.total += float(finite.sum())
            self.count += int(finite.numel())

        handles = [
            model.register_forward_pre_hook(read_mask, with_kwargs=True),
            block.register_forward_hook(measure, with_kwargs=True),
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._armed, self._mask = False, None

    @contextlib.contextmanager
    def measuring(self, batch: torch.Tensor | None = None) -> Iterator[None]:
        """Count the forward passes run inside. ``batch`` (a tensor of the inputs) identifies
        a batch fed again: it is then not counted twice."""
        if batch is not None and self._already_seen(batch):
            yield
            return
        self._armed = True
        try:
            yield
        finally:
            self._armed, self._mask = False, None

    def _already_seen(self, batch: torch.Tensor) -> bool:
        ref = self._seen.get(id(batch))
        if ref is not None and ref() is batch:
            return True
        self._seen = {k: r for k, r in self._seen.items() if r() is not None}
        self._seen[id(batch)] = weakref.ref(batch)
        return False

    def take(self) -> tuple[float, int]:
        """The (sum, count) measured since the last call, and reset."""
        out = (self.total, self.count)
        self.total, self.count = 0.0, 0
        return out
