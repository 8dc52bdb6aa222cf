"""Gradient targets for `anglecurate validate`: what a prompt would do to the model in training.

For one example, one real backward pass of the same model that scored it:

- ``answer``: the LM loss (mean token NLL) of a reference answer, rendered as the assistant
  turn after the scored prompt; the whole-model gradient norm of that loss, and the
  gradient norm of each layer's MLP input projections (the weights that read the very
  hidden states the angles are measured on).
- ``rl``: GRPO's view. k completions are sampled (seeded, from a forked generator: the
  caller's random state is left as it was), rewarded by :mod:`anglecurate.rewards.registry`
  (``boxed`` by default, ``number``, or any ``module:function`` with TRL's reward signature),
  turned into group advantages (r - mean) / (std + eps), and the gradient norm of the
  advantage-weighted mean log-prob loss is taken. A group whose rewards are all equal has zero
  advantages and no gradient.

Why the MLP input projection: for a linear layer y_i = W x_i with output gradients g_i,
dL/dW = sum_i g_i x_i^T, so ||dL/dW||_F^2 = sum_{i,j} <x_i, x_j> <g_i, g_j>: the Gram
matrix of the inputs, whose normalised form is the cosine matrix the angles summarise,
weights the gradient's size (the paper's argument; tested in tests/evidence/test_validate.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jinja2 import TemplateError
from torch import nn

from anglecurate.base.errors import UserError
from anglecurate.rewards.registry import Reward

TEMPLATE_TARGET = "the assistant turn as the chat template renders it"
REJECTED_TARGET = "answer+eos (the chat template rejected an assistant turn)"
NOT_EXTENDED_TARGET = "answer+eos (the chat template's assistant turn does not extend the prompt)"


def mlp_input_projections(mlps: list[nn.Module | None], probe: Callable[[], None]) -> list[list[nn.Linear]]:
    """Per MLP, the linear layers whose input is the MLP's own input (gate and up
    projections in Llama-style blocks, ``c_fc`` or ``fc1`` elsewhere), found by watching
    one ``probe()`` forward rather than by module names."""
    seen: dict[int, torch.Tensor] = {}
    hits: list[list[nn.Linear]] = [[] for _ in mlps]
    hooks = []
    for k, mlp in enumerate(mlps):
        if mlp is None:  # a layer without a feed-forward block (a Mamba layer): nothing to read
            continue
        hooks.append(mlp.register_forward_pre_hook(lambda _m, a, k=k: seen.__setitem__(k, a[0])))
        for module in mlp.modules():
            if isinstance(module, nn.Linear):

                def hook(m, a, k=k):
                    if a[0] is seen.get(k) and m not in hits[k]:
                        hits[k].append(m)

                hooks.append(module.register_forward_pre_hook(hook))
    try:
        probe()
    finally:
        for h in hooks:
            h.remove()
    if not all(h for h, mlp in zip(hits, mlps, strict=True) if mlp is not None):
        raise UserError(
            "cannot find the linear layers that read the MLP input; validate supports Llama-style MLPs"
        )
    return hits


@dataclass
class AnswerExample:
    """A scored prompt followed by its reference answer. input_ids: [T] int64; the answer
    is tokens [answer_start, T); ``target`` says how the answer was rendered
    (``TEMPLATE_TARGET``, or one of the ``answer+eos`` fallbacks)."""

    input_ids: torch.Tensor
    answer_start: int
    target: str = TEMPLATE_TARGET


def answer_example(
    tokenizer, chat_template: str, messages: list[dict], prompt_text: str, prompt_ids: list[int], answer: str
) -> AnswerExample:
    """The scored prompt tokens, then the answer as the template renders an assistant turn
    (its closing tokens included); plain ``answer + eos`` when the template rejects an
    assistant turn or its rendering of the longer conversation does not extend the prompt's
    (said in ``target``: validate warns and records it)."""
    try:
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": answer}], chat_template=chat_template, tokenize=False
        )
    except (TemplateError, ValueError):  # raise_exception() in the template, or no template
        full, target = "", REJECTED_TARGET
    else:
        target = TEMPLATE_TARGET if full.startswith(prompt_text) else NOT_EXTENDED_TARGET
    tail = full[len(prompt_text) :] if target == TEMPLATE_TARGET else answer + (tokenizer.eos_token or "")
    answer_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    if not answer_ids:
        raise UserError("a reference answer is empty; pick another --answer-field")
    ids = torch.tensor(prompt_ids + answer_ids, dtype=torch.long)
    return AnswerExample(ids, len(prompt_ids), target)


def token_logprobs(lm: nn.Module, input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """log p(token t | tokens < t) for t in [start, T): [T - start] float32, differentiable."""
    logits = lm(input_ids=input_ids.unsqueeze(0), use_cache=False).logits[0, start - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, input_ids[start:].unsqueeze(-1)).squeeze(-1)


def gradient_norms(
    lm: nn.Module, loss: torch.Tensor, projections: list[list[nn.Linear]]
) -> tuple[float, list[float]]:
    """Backward ``loss``; returns the whole-model gradient norm and each layer's MLP input
    projection gradient norm (parameters shared by tied embeddings count once)."""
    lm.zero_grad(set_to_none=True)
    loss.backward()
    # parameters() yields a tied embedding / LM head weight once.
    total = math.sqrt(
        sum(float(p.grad.double().square().sum()) for p in lm.parameters() if p.grad is not None)
    )
    per_layer = [
        math.sqrt(
            sum(float(m.weight.grad.double().square().sum()) for m in mods if m.weight.grad is not None)
        )
        for mods in projections
    ]
    lm.zero_grad(set_to_none=True)
    return total, per_layer


def answer_target(lm: nn.Module, example: AnswerExample, projections: list[list[nn.Linear]]) -> dict:
    """Loss of the reference answer and its gradient norms (see module docstring)."""
    ids = example.input_ids.to(next(lm.parameters()).device)
    loss = -token_logprobs(lm, ids, example.answer_start).mean()
    total, per_layer = gradient_norms(lm, loss, projections)
    return {"loss": float(loss.detach()), "grad_norm": total, "grad_mlp_in_layers": per_layer}


# -- RL-style target --------------------------------------------------------------------------


def rl_target(
    lm: nn.Module,
    tokenizer,
    prompt_ids: list[int],
    answer: str,
    projections: list[list[nn.Linear]],
    reward: Reward,
    samples: int,
    max_new_tokens: int,
    seed: int,
    prompt: list[dict] | str | None = None,
) -> dict:
    """GRPO on one prompt: sample, reward, group advantages, gradient of the weighted loss.

    ``reward`` has TRL's signature; it is given ``prompts`` (``prompt``: the conversation, or
    the text), ``completions`` (conversational when ``prompt`` is a conversation, as TRL
    passes them) and ``answer``, each a list of ``samples``. Sampling draws from a generator
    seeded with ``seed`` and forked from torch's, which is left as it was."""
    device = next(lm.parameters()).device
    prompt_t = torch.tensor([prompt_ids], device=device)
    # generate() draws from torch's global generator: fork it, as the pilot's evaluation does
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        out = lm.generate(
            prompt_t.expand(samples, -1),
            attention_mask=torch.ones(samples, prompt_t.shape[1], dtype=torch.long, device=device),
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        )
    completions = []
    for row in out[:, prompt_t.shape[1] :]:
        ids = row.tolist()
        if tokenizer.eos_token_id in ids:  # keep the end token: it is part of the action
            ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
        completions.append(ids)
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in completions]
    chat = isinstance(prompt, list)
    given = [[{"role": "assistant", "content": t}] for t in texts] if chat else texts
    prompts = [prompt if prompt is not None else tokenizer.decode(prompt_ids)] * samples
    scores = reward(prompts=prompts, completions=given, answer=[answer] * samples)
    rewards = torch.tensor(_reward_values(scores, samples))
    advantages = (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-4)
    result = {"pass_rate": float(rewards.mean()), "zero_variance": bool(rewards.std() == 0)}
    if result["zero_variance"]:  # every advantage is 0: GRPO takes no step on this prompt
        return result | {"rl_grad_norm": 0.0}
    loss = torch.zeros((), device=device)
    for ids, adv in zip(completions, advantages.tolist(), strict=True):
        if ids and adv:
            full = torch.tensor(prompt_ids + ids, device=device)
            loss = loss - adv * token_logprobs(lm, full, len(prompt_ids)).mean() / samples
    total, _ = gradient_norms(lm, loss, projections)
    return result | {"rl_grad_norm": total}


def _reward_values(scores, samples: int) -> list[float]:
    """A reward's return value as ``samples`` floats (None, TRL's "not scored", as 0.0)."""
    try:
        values = [0.0 if s is None else float(s) for s in scores]
    except (TypeError, ValueError) as exc:
        raise UserError(f"--reward must return a list of numbers, one per completion ({exc})") from exc
    if len(values) != samples:
        raise UserError(f"--reward returned {len(values)} rewards for {samples} completions; one each")
    return values
