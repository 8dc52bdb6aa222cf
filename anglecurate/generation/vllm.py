"""Generation with vLLM: TRL's colocated engine when the trainer has one, else a fresh one.

vLLM is imported lazily (never at module import) and is not installed on this project's
CPU machine, so this path is unit-tested only against a fake ``LLM`` with vLLM's
``generate(prompts, sampling_params, use_tqdm=...)`` interface (tests/generation); it has
not run against vLLM itself here.

Where TRL keeps the engine (read in TRL 1.16.0's ``GRPOTrainer``): with ``use_vllm`` and
``vllm_mode="colocate"``, ``__init__`` builds ``self.vllm_generation = VLLMGeneration(...)``,
which holds the ``vllm.LLM`` as ``.llm``; before each generation ``_generate_single_turn``
pushes the policy's weights with ``vllm_generation.sync_weights()`` when
``state.global_step != _last_loaded_step``. Earlier releases (the 0.2x line) kept the LLM
as ``trainer.llm`` and pushed weights with ``trainer._move_model_to_vllm()`` under the same
step tag (as forks of those releases show; not run here). :func:`shared_engine` finds
either, and :meth:`VllmEngine.generate` runs the same step check first: an evaluation after
an optimizer step sees the updated weights (the engine otherwise still holds the weights of
that step's rollouts), and the next rollout does not push them twice. With vLLM's sleep
mode on, it wakes the KV cache for the call and puts the engine back to sleep, as TRL does.
In server mode the engine lives in another process; it is not shared (the dispatch uses
HF generate then).

Prompts go in as the token ids HF generate gets
(:func:`~anglecurate.generation.request.prompt_ids`), one ``SamplingParams`` per prompt:
``n = k``, ``temperature`` (0 greedy), ``max_tokens``, the model's stop ids, no top-p or
repetition penalty, and ``seed = request.seed_of(i)`` (vLLM's per-request generator, so a
prompt's samples do not depend on its batch). Output ids are cut after the first stop token
and decoded by the tokenizer, as on the HF path. The same seed gives the same completions
on the same vLLM build and GPU; they are not the HF path's samples (other random draws),
while greedy answers agree with HF up to the numerics of the two kernels.
"""

from __future__ import annotations

import contextlib

import torch

from anglecurate.generation.request import (
    GenerationRequest,
    GenerationResult,
    prompt_ids,
    stop_ids,
    through_stop,
)


class SharedTurn:
    """The trainer's side of a shared engine: weights pushed when stale, sleep mode kept."""

    def __init__(self, trainer):
        self.trainer = trainer

    def _holder(self):
        return getattr(self.trainer, "vllm_generation", None)

    def sync(self) -> None:
        t, holder = self.trainer, self._holder()
        step = t.state.global_step
        sleeping = bool(getattr(holder, "_llm_weights_sleeping", False))
        if step == getattr(t, "_last_loaded_step", None) and not sleeping:
            return
        if holder is not None:
            holder.sync_weights()  # TRL 1.x: also wakes sleeping weights
        else:
            t._move_model_to_vllm()  # TRL 0.2x
        t._last_loaded_step = step

    @contextlib.contextmanager
    def turn(self):
        self.sync()
        holder = self._holder()
        sleep = bool(getattr(holder, "enable_sleep_mode", False))
        llm = holder.llm if holder is not None else self.trainer.llm
        if sleep:
            llm.wake_up(tags=["kv_cache"])
        try:
            yield
        finally:
            if sleep:
                llm.sleep(level=2)
                holder._llm_weights_sleeping = True


def shared_engine(trainer):
    """The ``vllm.LLM`` a TRL trainer generates with in colocate mode, or None."""
    if trainer is None or not getattr(trainer, "use_vllm", False):
        return None
    holder = getattr(trainer, "vllm_generation", None)
    if holder is not None:  # TRL 1.x
        return holder.llm if getattr(holder, "mode", None) == "colocate" else None
    if getattr(trainer, "vllm_mode", None) == "colocate":  # TRL 0.2x
        return getattr(trainer, "llm", None)
    return None


def sampling_params_class():
    from vllm import SamplingParams

    return SamplingParams


class VllmEngine:
    """Generation with a ``vllm.LLM`` (shared from a trainer, or started by :meth:`start`).

    ``sampling_params`` is vLLM's ``SamplingParams`` class (looked up on first use; a test
    passes its own)."""

    name = "vllm"

    def __init__(self, llm, model, tokenizer, trainer=None, sampling_params=None):
        self.llm, self.tokenizer = llm, tokenizer
        self.stops = stop_ids(model, tokenizer)
        self.shared = SharedTurn(trainer) if trainer is not None else None
        self._sampling_params = sampling_params

    @classmethod
    def start(cls, model, tokenizer, seed: int = 0, gpu_memory_utilization: float = 0.5):
        """A fresh engine for ``model``'s checkpoint, loaded from disk by vLLM (its
        ``name_or_path``): for a model whose weights are those on disk, not one in training."""
        from vllm import LLM

        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        llm = LLM(
            model=model.name_or_path, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization
        )
        return cls(llm, model, tokenizer)

    def params(self, request: GenerationRequest, i: int):
        cls = self._sampling_params or sampling_params_class()
        return cls(
            n=request.k,
            temperature=request.temperature,
            top_p=1.0,
            repetition_penalty=1.0,
            max_tokens=request.max_new_tokens,
            stop_token_ids=sorted(self.stops),
            seed=request.seed_of(i),
        )

    def generate(self, request: GenerationRequest) -> GenerationResult:
        ids = prompt_ids(self.tokenizer, request)
        prompts = [{"prompt_token_ids": p} for p in ids]
        params = [self.params(request, i) for i in range(len(ids))]
        turn = self.shared.turn() if self.shared is not None else contextlib.nullcontext()
        device = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        # vLLM seeds each request itself; the fork keeps the trainer's RNG out of reach of
        # anything in vLLM that would draw from the global one.
        with torch.random.fork_rng(devices=device), turn:
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False) if prompts else []
        token_ids = []
        for out in outputs:
            samples = sorted(out.outputs, key=lambda o: getattr(o, "index", 0))
            token_ids.append([through_stop(list(s.token_ids), self.stops) for s in samples])
        if len(token_ids) != len(ids) or any(len(row) != request.k for row in token_ids):
            raise RuntimeError(
                f"vLLM returned {len(token_ids)} prompts for {len(ids)} asked, or not {request.k} each"
            )
        return GenerationResult.decode(self.tokenizer, request, ids, token_ids, self.name)
