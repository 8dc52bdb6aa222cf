"""Generation with Hugging Face ``generate``: left-padded batches under a token budget.

Every (prompt, sample) pair is one sequence. Sequences are sorted by prompt length, longest
first (:func:`anglecurate.base.batches.plan_batches`), and batched so that ``batch x
(longest prompt + max_new_tokens)`` stays within ``max_batch_tokens``: the KV cache of a
batch is bounded whatever the prompt lengths, and sorting keeps padding small. Prompts are
left-padded by hand (the tokenizer's ``padding_side`` is never touched) with an attention
mask, so each row's positions start at its first real token.

Decoding is TRL's: a fresh ``GenerationConfig`` (no top-k, top-p or repetition penalty
from the model's own config), the cache on, compilation off.

- Greedy (``temperature`` 0): the argmax token at every step.
- Sampled: each sequence draws from ``softmax(logits / temperature)``, the distribution
  TRL's GRPO samples from by default, by the Gumbel-max trick: the argmax of ``logits / T +
  G`` with ``G`` standard Gumbel noise from the sequence's own generator (seeded by
  ``request.seed_of(prompt, sample)``), one draw of vocabulary size per row and step. A
  sequence's noise is therefore the same whatever batch it lands in, which
  ``torch.multinomial`` over a batch cannot give.

The guarantee: the same request (seed, prompts, streams) gives the same completions, under
any ``max_batch_tokens`` and with any other prompts beside it, up to floating-point rounding:
padding changes the shapes of the attention products, and in a near-tie between two tokens
(rare in fp32, less rare in bf16) that rounding can flip the argmax. Model weights, device
and dtype must be the same too. The global torch RNG (CPU, and the CUDA device in use) is
left as it was (``torch.random.fork_rng``); the model's train/eval mode is restored.
"""

from __future__ import annotations

import torch

from anglecurate.base.batches import plan_batches
from anglecurate.generation.request import (
    GenerationRequest,
    GenerationResult,
    prompt_ids,
    stop_ids,
    through_stop,
)

# Sequence x (prompt + new tokens) per generate call. At SmolLM2-135M's KV cache (30
# layers x 2 x 192 floats a token) 32k tokens hold 1.5 GB in fp32.
DEFAULT_BATCH_TOKENS = 32_768


class GumbelSampler:
    """A logits processor that turns greedy decoding into seeded sampling at ``temperature``.

    Row ``r`` of the batch draws its noise from a ``torch.Generator`` seeded ``seeds[r]``:
    one draw of the vocabulary's size per decoding step, so a row's t-th token depends on
    its own seed and step only. ``scores`` [B, V] float32 in, perturbed scores out."""

    def __init__(self, temperature: float, seeds: list[int]):
        self.temperature = temperature
        self.seeds = seeds
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        width = scores.shape[-1]
        # Gumbel noise is -log(E) with E ~ Exp(1): one fused draw and one log per row. E = 0
        # (a draw of 2^-24 odds) would be an infinite score; the smallest normal float32
        # keeps it finite and still the winner, as the near-zero E it stands for would be.
        e = torch.stack(
            [torch.empty(width, device=scores.device).exponential_(generator=g) for g in self.generators]
        )
        return scores.float() / self.temperature - e.clamp_min_(torch.finfo(torch.float32).tiny).log_()


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, longest] input ids padded on the left with ``pad_id``, and the [B, longest]
    attention mask (1 on real tokens), both int64."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            ids[b, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[b, width - len(r) :] = 1
    return ids, mask


class HFEngine:
    """``model.generate`` in budgeted batches; see the module docstring for the guarantee."""

    name = "hf"

    def __init__(self, model, tokenizer, max_batch_tokens: int = DEFAULT_BATCH_TOKENS):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.stops = stop_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)

    def plan(self, request: GenerationRequest, ids: list[list[int]]) -> list[list[tuple[int, int]]]:
        """The batches of (prompt, sample) pairs, longest prompt first, within the budget."""
        pairs = [(i, j) for i in range(len(ids)) for j in range(request.k)]
        lengths = [len(ids[i]) + request.max_new_tokens for i, _ in pairs]
        return [[pairs[n] for n in batch] for batch in plan_batches(lengths, self.max_batch_tokens)]

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> GenerationResult:
        ids = prompt_ids(self.tokenizer, request)
        out: list[list[list[int]]] = [[[] for _ in range(request.k)] for _ in ids]
        model = self.model
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                for batch in self.plan(request, ids):
                    rows = self._generate(request, [ids[i] for i, _ in batch], batch, device)
                    for (i, j), row in zip(batch, rows, strict=True):
                        out[i][j] = row
        finally:
            model.train(was_training)
        return GenerationResult.decode(self.tokenizer, request, ids, out, self.name)

    def _generate(self, request, rows: list[list[int]], pairs, device) -> list[list[int]]:
        from transformers import GenerationConfig, LogitsProcessorList

        input_ids, mask = left_pad(rows, self.pad_id)
        config = GenerationConfig(
            max_new_tokens=request.max_new_tokens,
            do_sample=False,  # sampling, when asked, is the Gumbel processor's argmax
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.stops) or None,
            repetition_penalty=1.0,
            use_cache=True,
            disable_compile=True,
        )
        processors = LogitsProcessorList()
        if not request.greedy:
            processors.append(GumbelSampler(request.temperature, [request.seed_of(i, j) for i, j in pairs]))
        generated = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=processors,
        )
        new = generated[:, input_ids.shape[1] :].tolist()
        return [through_stop(r, self.stops) for r in new]
