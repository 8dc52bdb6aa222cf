"""Held-out accuracy: the policy answers every held-out prompt once, scored by the reward.

Generation goes through the one generation path (:mod:`anglecurate.generation`): prompts
rendered as TRL renders them for training (the chat template with the generation prompt,
or the plain text for a model without one), generated greedily (or sampled at
``temperature`` from a fixed seed), by HF ``generate`` in budgeted left-padded batches, or
by the trainer's own colocated vLLM engine when training uses vLLM (``trainer`` given).
The reward is applied by :func:`anglecurate.generation.graded.grade`, the same function as
training's; accuracy is the mean reward clipped to [0, 1]: pass@1 for the built-in 0/1
rewards. The trainer's random state is left untouched.
"""

from __future__ import annotations

from anglecurate.generation.engine import pick_engine
from anglecurate.generation.graded import grade
from anglecurate.generation.hf import DEFAULT_BATCH_TOKENS
from anglecurate.generation.request import make_request


def evaluate(
    model,
    tokenizer,
    prompts: list,
    answers: list[str],
    reward,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    trainer=None,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> tuple[float, int]:
    """(accuracy in [0, 1], generated tokens, stop tokens included) of ``model`` on the
    held-out prompts."""
    # With a trainer: its colocated vLLM engine if it has one, else HF. Without: HF, never a
    # fresh vLLM engine, which would load the checkpoint from disk, not the policy in memory.
    engine = pick_engine(
        model,
        tokenizer,
        engine="auto" if trainer is not None else "hf",
        trainer=trainer,
        max_batch_tokens=max_batch_tokens,
    )
    request = make_request(tokenizer, prompts, max_new_tokens, temperature=temperature, seed=seed)
    result = engine.generate(request)
    return grade(result, reward, answers).accuracy, result.generated_tokens
