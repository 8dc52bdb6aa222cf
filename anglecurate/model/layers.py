"""Structure discovery in a loaded model: its decoder stack and each layer's feed-forward block.

Everything is found by structure, never by attribute names:

- The decoder stack is the shallowest ``ModuleList`` of ``num_hidden_layers`` blocks. Its
  blocks may differ in class (Jamba's attention and Mamba layers, Zamba's hybrids).
- A four-token probe forward runs once with a pre-hook on every weight-holding module in
  the stack, recording what each is called with. Each such module is then classed, from
  those recorded inputs: *mixing* when its output at the last token changes with the first
  token (attention, state-space and linear-attention mixers), *position-wise* otherwise
  (MLPs, mixture-of-experts blocks, projections; RWKV's channel mix, which sees only the
  previous token, too). Only modules whose input is the [batch, tokens, hidden] residual
  width count. A module that cannot be re-run on its recorded inputs (a wrong argument, a
  shape check) is not position-wise; any other failure of that run is refused, naming the
  module, as an unsupported model or a bug, never taken for a classification.
- A layer's feed-forward block is the first position-wise module called in it, taking the
  hidden width, that is neither inside another such module (``mlp``, not ``mlp.up_proj``)
  nor inside a mixer that mixes on its own (attention's ``q_proj``). A whole decoder block
  nested in a layer (Zamba's shared transformer) is a mixer that contains a mixer, so its
  MLP still counts. Its input is the paper's signal: the post-attention-norm output in a
  pre-norm block, the block's input norm in parallel-attention blocks (Phi, Cohere,
  GPT-NeoX, Falcon), and ``fc1``'s input where the feed-forward has no module of its own
  (OPT, BioGPT, XGLM).
- A layer without one (a Mamba layer, an attention-only Nemotron-H block) is not scored;
  a model none of whose layers has one (Mamba, Mamba-2) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from anglecurate.base.errors import UserError, first_line

PROBE_TOKENS = 4


@dataclass
class LoadedModel:
    """The (language) model, its decoder layers and each layer's feed-forward block (same
    order; None for a layer that has none)."""

    base: nn.Module
    layers: list[nn.Module]
    mlps: list[nn.Module | None]
    dtype: torch.dtype
    device: torch.device
    attn_implementation: str | None = None
    note: str | None = None  # what part of the checkpoint is scored, when not all of it
    # each layer's block as a name inside its layer: "mlp", "fc1", "shared_transf.feed_forward"
    mlp_names: list[str | None] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def ffn_layers(self) -> list[int]:
        """Indices of the layers that have a feed-forward block (the scorable ones)."""
        return [i for i, m in enumerate(self.mlps) if m is not None]


def wrap_model(base: nn.Module, num_layers: int, hidden_size: int | None = None) -> LoadedModel:
    """Locate the decoder layers and feed-forward blocks of an already loaded model."""
    layers = find_decoder_layers(base, num_layers)
    if hidden_size is None:
        config = getattr(base, "config", None)
        hidden_size = getattr(config.get_text_config(), "hidden_size", None) if config is not None else None
    calls, first = _probe(base, layers)
    _check_causal(base, first)
    names = find_mlps(calls, len(layers), hidden_size)
    mlps = [layer.get_submodule(name) if name else None for layer, name in zip(layers, names, strict=True)]
    if not any(mlps):
        raise UserError(
            f"no layer of {type(base).__name__} has a feed-forward block: it is a pure state-space "
            "(or mixer-only) model, and the angle signal is the input of an MLP; nothing to score"
        )
    param = next(base.parameters())
    attn = getattr(getattr(base, "config", None), "_attn_implementation", None)
    return LoadedModel(base, layers, mlps, param.dtype, param.device, attn, names)


def _check_causal(base: nn.Module, first: torch.Tensor) -> None:
    """Refuse a bidirectional encoder (BERT and kin): in a causal LM the first position's
    output (``first``, from the probe) cannot change when the last token does."""
    changed = _probe_ids(base)
    changed[0, -1] += 1
    again = _forward(base, changed)
    if not torch.allclose(first, again, rtol=1e-4, atol=1e-6):
        raise UserError(
            f"{type(base).__name__} is not a causal language model (its first position sees later "
            "tokens); anglecurate scores decoder-only LMs, whose prompts read left to right"
        )


def _probe_ids(base: nn.Module) -> torch.Tensor:
    return torch.arange(PROBE_TOKENS, device=next(base.parameters()).device)[None]


def _forward(base: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """One probe forward; returns the output at the first position, [width] float32."""
    try:
        with torch.inference_mode():
            return _first_tensor(base(input_ids=ids, use_cache=False))[0, 0].float()
    except Exception as exc:
        raise UserError(f"a probe forward of {type(base).__name__} failed: {first_line(exc)}") from exc


def find_decoder_layers(base: nn.Module, num_layers: int) -> list[nn.Module]:
    """The shallowest ModuleList of ``num_layers`` blocks: the decoder stack (a deeper one
    of the same length would be, say, a list of experts)."""
    found = [
        (name.count("."), name, module)
        for name, module in base.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    if not found:
        raise UserError(
            f"cannot find the decoder stack of {type(base).__name__}: no list of its {num_layers} "
            "layers (config.num_hidden_layers); is the config the model's own?"
        )
    return list(min(found, key=lambda f: f[0])[2])


def _holds_matrix(module: nn.Module) -> bool:
    return any(p.ndim >= 2 for p in module.parameters())


@dataclass
class _Call:
    """A module's first call during the probe: where it sits and what it was given."""

    layer: int
    name: str  # relative to its layer
    module: nn.Module
    args: tuple
    kwargs: dict
    order: int


def find_mlps(calls: list[_Call], num_layers: int, hidden_size: int | None) -> list[str | None]:
    """Each layer's feed-forward block, from the probe's ``calls``, as a name relative to
    the layer (None: it has none)."""
    names = []
    for index in range(num_layers):
        own = [c for c in calls if c.layer == index]
        kinds = {c.name: _kind(c, hidden_size) for c in own}
        mixers = [n for n, k in kinds.items() if k == "mix"]
        leaf_mixers = [m for m in mixers if not any(o != m and _inside(o, m) for o in mixers)]
        candidates = [
            c.name
            for c in own
            if kinds[c.name] == "pw"
            and not any(_inside(c.name, m) for m in leaf_mixers)
            and not any(o != c.name and kinds[o] == "pw" and _inside(c.name, o) for o in kinds)
        ]
        names.append(candidates[0] if candidates else None)
    return names


def _probe(base: nn.Module, layers: list[nn.Module]) -> tuple[list[_Call], torch.Tensor]:
    """Run a four-token forward with a pre-hook on every weight-holding module in the stack;
    returns the calls and the output at the first position.

    A module may serve several layers (Zamba's shared transformer block), so each call is
    credited to the layer running at the time, which the layers' own pre-hooks track."""
    calls: list[_Call] = []
    current: list[int | None] = [None]
    names = [{id(m): n for n, m in layer.named_modules() if n and _holds_matrix(m)} for layer in layers]
    modules = {id(m): m for layer in layers for n, m in layer.named_modules() if n and _holds_matrix(m)}
    seen: set[tuple[int, int]] = set()

    def enter(index):
        def hook(_module, _args):
            current[0] = index

        return hook

    def record(module, args, kwargs):
        index = current[0]
        name = names[index].get(id(module)) if index is not None else None
        if name is not None and (index, id(module)) not in seen:
            seen.add((index, id(module)))
            calls.append(_Call(index, name, module, _detach(args), _detach(kwargs), len(calls)))

    hooks = [layer.register_forward_pre_hook(enter(i)) for i, layer in enumerate(layers)]
    hooks += [m.register_forward_pre_hook(record, with_kwargs=True) for m in modules.values()]
    try:
        first = _forward(base, _probe_ids(base))
    finally:
        for h in hooks:
            h.remove()
    return calls, first


def _detach(value):
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, tuple | list):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _sequence_input(call: _Call) -> tuple[str, int | str] | None:
    """Where the call's token-sequence input is: ("arg", i) or ("kwarg", name); it is
    [batch, tokens, width], or tokens flattened to [batch * tokens, width] (OPT's fc1)."""
    places = [("arg", i, v) for i, v in enumerate(call.args)]
    places += [("kwarg", k, v) for k, v in call.kwargs.items()]
    for kind, key, value in places:
        if torch.is_tensor(value) and value.ndim in (2, 3) and value.shape[-2] == PROBE_TOKENS:
            return kind, key
    return None


def _kind(call: _Call, hidden_size: int | None) -> str:
    """``mix`` (mixes tokens, at any width), ``pw`` (position-wise on the residual width),
    or ``other`` (position-wise on another width, or not on a token sequence)."""
    where = _sequence_input(call)
    if where is None:
        return "other"
    kind, key = where
    x = call.args[key] if kind == "arg" else call.kwargs[key]
    residual = hidden_size is None or x.shape[-1] == hidden_size
    if isinstance(call.module, nn.Linear):
        return "pw" if residual else "other"
    bumped = x.clone()
    bumped[..., 0, :] += 1.0 + bumped[..., 0, :].abs()
    try:
        with torch.inference_mode():
            before = _first_tensor(_call_with(call, kind, key, x))
            after = _first_tensor(_call_with(call, kind, key, bumped))
    except Exception as exc:
        if _cannot_run_alone(exc):
            return "mix"  # needs inputs of its own, not the recorded ones: not a block to hook
        raise UserError(
            f"probing {call.name!r} ({type(call.module).__name__}) of layer {call.layer} failed with "
            f"{type(exc).__name__}: {first_line(exc)}; this model is unsupported or its code has a bug "
            "(ANGLECURATE_DEBUG=1 shows the traceback)"
        ) from exc
    if before is None or after is None or before.shape != after.shape or before.ndim < 2:
        return "other"
    last_before, last_after = before[..., -1, :].float(), after[..., -1, :].float()
    if not torch.allclose(last_before, last_after, rtol=1e-4, atol=1e-6):
        return "mix"
    return "pw" if residual else "other"


# What re-running a module on its recorded inputs may legitimately raise: a wrong argument
# (TypeError: it wants inputs its parent builds), a value or index it rejects, or torch's
# shape and size checks. Anything else (AttributeError, a bare RuntimeError) is a bug or an
# unsupported model, never a classification.
_SHAPE_WORDS = ("shape", "size", "dimension", "dim ", "must match", "broadcast")


def _cannot_run_alone(exc: Exception) -> bool:
    if isinstance(exc, TypeError | ValueError | IndexError):
        return True
    return type(exc) is RuntimeError and any(w in str(exc).lower() for w in _SHAPE_WORDS)


def _call_with(call: _Call, kind: str, key, x: torch.Tensor):
    args, kwargs = list(call.args), dict(call.kwargs)
    if kind == "arg":
        args[key] = x
    else:
        kwargs[key] = x
    return call.module(*args, **kwargs)


def _first_tensor(output):
    """The first tensor of a module's output: a tensor, a tuple, or a transformers
    ModelOutput (a dict holding only what was set: ``last_hidden_state`` or ``logits``)."""
    if torch.is_tensor(output):
        return output
    values = (
        output.values() if isinstance(output, dict) else output if isinstance(output, tuple | list) else ()
    )
    return next((o for o in values if torch.is_tensor(o)), None)


def _inside(name: str, parent: str) -> bool:
    return name.startswith(parent + ".")
