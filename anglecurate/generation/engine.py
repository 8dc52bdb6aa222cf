"""The one point that picks a generation engine: HF ``generate`` or vLLM.

``engine``:

- ``"hf"``    :class:`anglecurate.generation.hf.HFEngine`, always available (CPU or GPU);
- ``"vllm"``  the trainer's colocated vLLM engine when it has one; without a trainer, a
              fresh vLLM engine for the checkpoint on disk. Refused in one line where
              vLLM is not installed, no CUDA GPU is visible, or a trainer is given that
              has no colocated engine (its weights are in memory, not on disk);
- ``"auto"``  the trainer's colocated vLLM engine when it has one. With a trainer and no
              such engine, HF: the policy's weights are in memory, and a fresh vLLM engine
              would load the checkpoint from disk. Without a trainer, vLLM where it is
              installed and a GPU is present, HF otherwise.

Every engine answers ``generate(GenerationRequest) -> GenerationResult``.
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

import torch

from anglecurate.base.errors import UserError
from anglecurate.generation.hf import DEFAULT_BATCH_TOKENS, HFEngine
from anglecurate.generation.request import GenerationRequest, GenerationResult
from anglecurate.generation.vllm import VllmEngine, shared_engine

ENGINES = ("auto", "hf", "vllm")


class Engine(Protocol):
    name: str

    def generate(self, request: GenerationRequest) -> GenerationResult: ...


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _vllm_refusal() -> str | None:
    """Why a fresh vLLM engine cannot start here, or None."""
    if not vllm_available():
        return "generation engine vllm needs the vllm package, which is not installed; install vllm or use hf"
    if not torch.cuda.is_available():
        return "generation engine vllm needs a CUDA GPU and none is visible; use hf"
    return None


def pick_engine(
    model,
    tokenizer,
    *,
    engine: str = "auto",
    trainer=None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> Engine:
    """The engine that generates for ``model`` (see the module docstring for the rule)."""
    if engine not in ENGINES:
        raise UserError(f"unknown generation engine {engine!r}; pass one of {', '.join(ENGINES)}")
    if engine != "hf":
        llm = shared_engine(trainer)
        if llm is not None:
            return VllmEngine(llm, model, tokenizer, trainer=trainer)
    if engine == "vllm":
        refusal = _vllm_refusal()
        if refusal:
            raise UserError(refusal)
        if trainer is not None:
            raise UserError(
                "generation engine vllm with a trainer needs its colocated vLLM engine "
                "(use_vllm, vllm_mode='colocate'); a fresh one would load stale weights from disk; use hf"
            )
        return VllmEngine.start(model, tokenizer)
    if engine == "auto" and trainer is None and _vllm_refusal() is None:
        return VllmEngine.start(model, tokenizer)
    if max_batch_tokens < 1:
        raise UserError(f"the generation batch budget must be at least 1 token, got {max_batch_tokens}")
    return HFEngine(model, tokenizer, max_batch_tokens)
