"""Angle capture: forward hooks on the MLP inputs of the scored layers.

Each hook reduces its layer's MLP input to per-segment sums the moment it is produced (one
fused reduction, see :mod:`anglecurate.scoring.angles.unit_sums`), so nothing of shape [tokens, d] outlives
its layer. The hook on the deepest scored layer then stops the forward: the layers above it,
the final norm and the LM head never run. Hooks live in a context manager that always
removes them, whatever happens inside.

With ``embed`` (``score --embed LAYER``), that layer's hook also pools the same MLP input:
the mean over each prompt's question tokens, [P, d] float32. Without it nothing more runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from anglecurate.model.layers import LoadedModel
from anglecurate.scoring.angles.dispatch import kernel_backend, reduce_segments
from anglecurate.scoring.angles.unit_sums import angles_from_sums
from anglecurate.scoring.gainrl_reference import ReferenceSpec, gainrl_reference_values


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early; caught by the caller."""


@dataclass(frozen=True)
class Batch:
    """A batch of P prompts, padded ([P, T], right padding) or packed ([1, T] with
    ``position_ids`` restarting at 0 for each prompt and no attention mask).

    input_ids: [B, T] int64. attention_mask: [B, T] int64, or None when packed.
    position_ids: [1, T] int64 when packed, else None.
    starts, ends: [P * 2] int64 token ranges in the flattened [B * T] tokens: prompt p's
        prefix is range 2p, its question range 2p + 1.
    segment_masks: [P, 2, T] float32 (padded batches only): the same ranges as masks.
    lengths: [P] int64 tokens of each prompt (prefix, question and suffix), which starts
        at ``starts[2p]``; read by the authors' metric only.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    starts: torch.Tensor
    ends: torch.Tensor
    segment_masks: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    @property
    def counts(self) -> torch.Tensor:
        """[P, 2] prefix and question token counts."""
        return (self.ends - self.starts).view(-1, 2).to(torch.float32)


@dataclass(frozen=True)
class DeviceSegments:
    """A batch's segments on the model's device, in the form the chosen reduction reads:
    ``plan`` (Triton), ``masks`` (padded, PyTorch) or ``starts``/``ends`` (packed, PyTorch)."""

    starts: torch.Tensor
    ends: torch.Tensor
    masks: torch.Tensor | None = None
    plan: object | None = None

    @classmethod
    def for_batch(cls, batch: Batch, device: torch.device) -> DeviceSegments:
        if kernel_backend(device) == "triton":
            from anglecurate.scoring.angles.kernel import SegmentPlan

            return cls(batch.starts, batch.ends, plan=SegmentPlan.build(batch.starts, batch.ends, device))
        masks = batch.segment_masks.to(device, non_blocking=True) if batch.segment_masks is not None else None
        return cls(batch.starts.to(device), batch.ends.to(device), masks=masks)


def question_means(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The mean of each prompt's question tokens of ``hidden`` ([B, T, d], padded or packed
    as ``batch`` lays it out): [P, d] float32, summed in float32 whatever the model's dtype."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    starts, ends = batch.starts[1::2], batch.ends[1::2]  # range 2p + 1: prompt p's question
    counts = ends - starts
    # Each question token's flat position and its prompt, then one scatter-add on the device.
    owner = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    position = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    position = position + starts[owner]
    device = flat.device
    sums = torch.zeros(counts.numel(), flat.shape[-1], dtype=torch.float32, device=device)
    sums.index_add_(0, owner.to(device), flat.index_select(0, position.to(device)).to(torch.float32))
    return sums / counts.to(device=device, dtype=torch.float32).unsqueeze(1)


class AngleCapture:
    """Runs batches through the base model and returns per-layer angle concentrations; with
    ``embed``, :attr:`embeddings` holds the last batch's pooled question tokens at that layer."""

    def __init__(
        self,
        model: LoadedModel,
        layer_indices: list[int],
        reference: ReferenceSpec | None = None,
        embed: int | None = None,
    ):
        self.model = model
        self.layer_indices = sorted(layer_indices)
        self.reference = reference
        if embed is not None and embed not in self.layer_indices:
            raise ValueError(f"embed layer {embed} is not among the scored layers {self.layer_indices}")
        self.embed = embed
        self.embeddings: torch.Tensor | None = None  # [P, d] float32 on CPU, after run()
        self._batch: Batch | None = None
        self._segments: DeviceSegments | None = None
        self._sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._reference: torch.Tensor | None = None

    def _hook(self, layer: int, is_deepest: bool):
        def hook(_module, args, kwargs):
            hidden = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
            if hidden.ndim == 2:  # tokens flattened before the block (OPT's fc1): [B * T, d]
                hidden = hidden.view(self._batch.input_ids.shape[0], -1, hidden.shape[-1])
            self._sums[layer] = reduce_segments(hidden, self._segments)
            if self.reference is not None and layer == self.reference.layer:
                self._reference = self._reference_values(hidden)
            if layer == self.embed:
                self.embeddings = question_means(hidden, self._batch)
            if is_deepest:
                raise _StopForward

        return hook

    def _reference_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """The authors' per-prompt value over each prompt's tokens: [P] float64."""
        batch, spec = self._batch, self.reference
        starts = batch.starts[0::2].tolist()
        lengths = batch.lengths.tolist()
        n_prefix = (batch.ends[0::2] - batch.starts[0::2]).tolist()
        n_suffix = (batch.starts[0::2] + batch.lengths - batch.ends[1::2]).tolist()
        prefixes = n_prefix if spec.prefix is None else [spec.prefix] * len(starts)
        suffixes = n_suffix if spec.suffix is None else [spec.suffix] * len(starts)
        flat = hidden.reshape(-1, hidden.shape[-1])
        return gainrl_reference_values(flat, starts, lengths, prefixes, suffixes)

    @torch.inference_mode()
    def run(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Forward one batch; returns (c_intra, c_inter), each [P, n_layers] float64 on CPU,
        and the authors' value [P] float64 when ``reference`` is set (else None)."""
        device = self.model.device
        self._batch = batch
        self._segments = DeviceSegments.for_batch(batch, device)
        self._sums = {}
        self._reference = None
        self.embeddings = None
        inputs = {"input_ids": batch.input_ids.to(device, non_blocking=True), "use_cache": False}
        if batch.attention_mask is not None:
            inputs["attention_mask"] = batch.attention_mask.to(device, non_blocking=True)
        if batch.position_ids is not None:  # packed: transformers masks each prompt off
            inputs["position_ids"] = batch.position_ids.to(device, non_blocking=True)
        try:
            self.model.base(**inputs)
        except _StopForward:
            pass
        finally:
            self._segments = None
            self._batch = None
        if len(self._sums) != len(self.layer_indices):
            raise RuntimeError("a scored layer's hook did not run; the model skipped layers")
        sums = torch.stack([self._sums[i][0] for i in self.layer_indices], dim=1)  # [P, L, 2, d]
        sq = torch.stack([self._sums[i][1] for i in self.layer_indices], dim=1)  # [P, L, 2]
        counts = batch.counts.to(sums.device).unsqueeze(1)  # [P, 1, 2]
        c_intra, c_inter = angles_from_sums(
            sums[..., 0, :], sums[..., 1, :], sq[..., 1], counts[..., 0], counts[..., 1]
        )
        self._sums = {}
        if self.embeddings is not None:
            self.embeddings = self.embeddings.cpu()
        return c_intra.cpu(), c_inter.cpu(), self._reference


@contextmanager
def angle_capture(
    model: LoadedModel,
    layer_indices: list[int],
    reference: ReferenceSpec | None = None,
    stop_early: bool = True,
    embed: int | None = None,
):
    """Register the hooks for ``layer_indices``; yield an :class:`AngleCapture`; remove them.
    With ``reference``, its layer's hook also computes the authors' per-prompt value; with
    ``embed`` (one of ``layer_indices``), that layer's hook pools the question tokens."""
    capture = AngleCapture(model, layer_indices, reference, embed)
    deepest = max(capture.layer_indices)
    # A feed-forward block may serve several layers (Zamba's shared block): each call is
    # credited to the layer running, which the layers' own pre-hooks track.
    served: dict[int, tuple[nn.Module, dict[int, Callable]]] = {}
    for i in capture.layer_indices:
        module = model.mlps[i]
        served.setdefault(id(module), (module, {}))[1][i] = capture._hook(i, stop_early and i == deepest)
    current: list[int | None] = [None]

    def enter(index):
        def hook(_module, _args):
            current[0] = index

        return hook

    def dispatch(hooks):
        def hook(module, args, kwargs):
            layer_hook = hooks.get(current[0])
            if layer_hook is not None:
                layer_hook(module, args, kwargs)

        return hook

    handles = [layer.register_forward_pre_hook(enter(i)) for i, layer in enumerate(model.layers)]
    handles += [m.register_forward_pre_hook(dispatch(h), with_kwargs=True) for m, h in served.values()]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
