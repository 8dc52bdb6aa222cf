"""Held-out accuracy: the policy answers every held-out prompt once, scored by the reward.

Prompts are rendered as TRL renders them for training (the chat template with the
generation prompt, or the plain text for a model without one), generated greedily (or
sampled at ``temperature`` from a fixed seed) in left-padded batches, and scored with the
same reward function as training. Accuracy is the mean reward clipped to [0, 1]: pass@1
for the built-in 0/1 rewards. The trainer's random state is left untouched.
"""

from __future__ import annotations

import torch


def render_prompts(tokenizer, prompts: list) -> list[str]:
    """Each prompt (a conversation or a string) as the text the policy is given."""
    if prompts and isinstance(prompts[0], list):
        return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return list(prompts)


@torch.no_grad()
def evaluate(
    model,
    tokenizer,
    prompts: list,
    answers: list[str],
    reward,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[float, int]:
    """(accuracy in [0, 1], generated tokens) of ``model`` on the held-out prompts."""
    texts = render_prompts(tokenizer, prompts)
    chat = bool(prompts) and isinstance(prompts[0], list)
    was_training, side = model.training, tokenizer.padding_side
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    model.eval()
    tokenizer.padding_side = "left"
    scores, tokens = [], 0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=not chat,  # the template already holds them
                ).to(device)
                sampling = (
                    {"do_sample": True, "temperature": temperature}
                    if temperature > 0
                    else {"do_sample": False}
                )
                out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=pad_id, **sampling)
                new = out[:, batch["input_ids"].shape[1] :]
                real = new != pad_id
                tokens += int(real.sum())
                completions = tokenizer.batch_decode(new, skip_special_tokens=True)
                if chat:
                    completions = [[{"role": "assistant", "content": c}] for c in completions]
                chunk = prompts[start : start + batch_size]
                rewards = reward(
                    prompts=chunk, completions=completions, answer=answers[start : start + batch_size]
                )
                scores += [min(max(float(r), 0.0), 1.0) if r is not None else 0.0 for r in rewards]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return (sum(scores) / len(scores) if scores else 0.0), tokens
