"""The padded (or packed) tensors of one scoring batch.

Which prompts share a batch is planned by :mod:`anglecurate.base.batches` (longest first,
``batch_size x longest`` within ``max_batch_tokens``); this module lays those prompts out
as the prefill's input: right-padded with segment masks, or packed into one sequence.
"""

from __future__ import annotations

import torch

from anglecurate.scoring.capture import Batch
from anglecurate.scoring.segments import Segmented


def _ranges(items: list[Segmented], offsets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[P * 2] starts and ends of each prompt's prefix and question, from its first token."""
    starts, ends = [], []
    for s, at in zip(items, offsets, strict=True):
        starts += [at, at + s.n_prefix]
        ends += [at + s.n_prefix, at + s.n_prefix + s.n_question]
    return torch.tensor(starts, dtype=torch.long), torch.tensor(ends, dtype=torch.long)


def collate(items: list[Segmented], pad_id: int) -> Batch:
    """Right-pad segmented prompts into a :class:`Batch`."""
    width = max(s.n_tokens for s in items)
    n = len(items)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    masks = torch.zeros((n, 2, width), dtype=torch.float32)
    for row, s in enumerate(items):
        input_ids[row, : s.n_tokens] = torch.tensor(s.input_ids, dtype=torch.long)
        attention_mask[row, : s.n_tokens] = 1
        masks[row, 0, : s.n_prefix] = 1.0
        masks[row, 1, s.n_prefix : s.n_prefix + s.n_question] = 1.0
    starts, ends = _ranges(items, [row * width for row in range(n)])
    return Batch(input_ids, attention_mask, starts, ends, segment_masks=masks, lengths=_lengths(items))


def collate_packed(items: list[Segmented]) -> Batch:
    """Pack prompts into one [1, sum of lengths] sequence, positions restarting per prompt.

    With no attention mask, transformers reads the position resets as sequence boundaries:
    a block-diagonal causal mask for SDPA/eager, document masks for FlexAttention,
    cu_seqlens for flash-attention (padding-free)."""
    offsets = [0]
    for s in items[:-1]:
        offsets.append(offsets[-1] + s.n_tokens)
    input_ids = torch.tensor([[t for s in items for t in s.input_ids]], dtype=torch.long)
    position_ids = torch.cat([torch.arange(s.n_tokens) for s in items]).unsqueeze(0)
    starts, ends = _ranges(items, offsets)
    return Batch(input_ids, None, starts, ends, position_ids=position_ids, lengths=_lengths(items))


def _lengths(items: list[Segmented]) -> torch.Tensor:
    return torch.tensor([s.n_tokens for s in items], dtype=torch.long)
