"""Structure discovery in a loaded model: its decoder layers and the MLP of each.

Decoder layers and their MLPs are found by structure, not by attribute names: the decoder
stack is the ``ModuleList`` of ``config.num_hidden_layers`` identical blocks, and a block's
MLP is the last weight-holding child the block calls, found by running a two-token probe
forward once. That child's input is the post-attention-norm output, the paper's signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from anglecurate.errors import UserError, first_line


@dataclass
class LoadedModel:
    """The base model, its decoder layers and the MLP of each (same order)."""

    base: nn.Module
    layers: list[nn.Module]
    mlps: list[nn.Module]
    dtype: torch.dtype
    device: torch.device

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def wrap_model(base: nn.Module, num_layers: int) -> LoadedModel:
    """Locate the decoder layers and MLPs of an already loaded base model."""
    layers = find_decoder_layers(base, num_layers)
    mlps = find_mlps(base, layers)
    param = next(base.parameters())
    return LoadedModel(base, layers, mlps, param.dtype, param.device)


def find_decoder_layers(base: nn.Module, num_layers: int) -> list[nn.Module]:
    """The ModuleList of ``num_layers`` blocks of one class (the decoder stack)."""
    for module in base.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) == num_layers
            and len({type(m) for m in module}) == 1
        ):
            return list(module)
    raise UserError(
        f"cannot find a stack of {num_layers} decoder layers in {type(base).__name__}; "
        "anglecurate scores decoder-only causal LMs (Llama, Qwen2, Mistral families)"
    )


def _holds_matrix(module: nn.Module) -> bool:
    return any(p.ndim >= 2 for p in module.parameters())


def find_mlps(base: nn.Module, layers: list[nn.Module]) -> list[nn.Module]:
    """Each layer's MLP: the last weight-holding child the layer calls (probe forward),
    which must take hidden-size inputs.

    Norms hold only vectors and attention is called before the MLP in every pre-norm
    decoder block, so the last matrix-holding child called is the feed-forward block.
    """
    first = layers[0]
    children = dict(first.named_children())
    order: list[str] = []
    width: dict[str, int] = {}

    def record(name):
        def hook(_module, args):
            order.append(name)
            if args and torch.is_tensor(args[0]):
                width[name] = args[0].shape[-1]

        return hook

    hooks = [child.register_forward_pre_hook(record(name)) for name, child in children.items()]
    try:
        device = next(base.parameters()).device
        with torch.inference_mode():
            base(input_ids=torch.tensor([[0, 1]], device=device), use_cache=False)
    except Exception as exc:
        raise UserError(f"a probe forward of {type(base).__name__} failed: {first_line(exc)}") from exc
    finally:
        for h in hooks:
            h.remove()
    called = [name for name in dict.fromkeys(order) if _holds_matrix(children[name])]
    if len(called) < 2:
        raise UserError(
            f"cannot identify attention and MLP blocks in {type(first).__name__}; "
            "anglecurate scores decoder-only causal LMs (Llama, Qwen2, Mistral families)"
        )
    mlp_name = called[-1]
    hidden = getattr(base.config, "hidden_size", None)
    if hidden is not None and width.get(mlp_name) != hidden:
        # An encoder's output projection, say: its input is not the residual stream.
        raise UserError(
            f"the feed-forward block of {type(first).__name__} does not take the hidden states "
            "as input; anglecurate scores decoder-only causal LMs (Llama, Qwen2, Mistral families)"
        )
    mlps = [dict(layer.named_children()).get(mlp_name) for layer in layers]
    if any(m is None for m in mlps):
        raise UserError(f"decoder layers of {type(base).__name__} differ in structure")
    return mlps
