"""The reward functions, with TRL's reward signature, and the one resolver of ``--reward``.

Every reward is called as ``reward(prompts=..., completions=..., answer=..., **kwargs)`` and
returns one float per completion (TRL's signature: dataset columns arrive as keyword lists,
``answer`` among them); completions are plain strings or TRL's conversational
``[{"role": "assistant", "content": ...}]`` lists. Used by validate's RL target, the
pilot's training and held-out evaluation, and every later rollout.

``boxed``   1.0 when the last ``\\boxed{...}`` of the completion equals the answer (its own
            ``\\boxed{}`` if it has one) after MATH-style normalisation (spaces,
            ``\\left``/``\\right``, ``\\dfrac``, units text, a trailing period, ``0.5`` vs
            ``.5``), else 0.0;
``number``  1.0 when the last number in the completion equals the answer as a number;
``module:function``  a user function ``f(completions, answer, **kwargs) -> list[float]``
            importable from the working directory or PYTHONPATH.

Each built-in is a pure function of strings, so training and held-out evaluation score alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from anglecurate.base.errors import UserError
from anglecurate.rewards.answers import boxed_match, number_match

BUILTIN_REWARDS = ("boxed", "number")
Reward = Callable[..., list]


def completion_text(completion) -> str:
    """The text of a completion: a string, or the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def boxed_reward(completions, answer, **_) -> list[float]:
    """1.0 where the last ``\\boxed{}`` equals ``answer`` after normalisation."""
    return [float(boxed_match(completion_text(c), str(a))) for c, a in zip(completions, answer, strict=True)]


def number_reward(completions, answer, **_) -> list[float]:
    """1.0 where the completion's last number equals ``answer`` (within 1e-6)."""
    return [float(number_match(completion_text(c), str(a))) for c, a in zip(completions, answer, strict=True)]


_BUILTIN = {"boxed": boxed_reward, "number": number_reward}


def resolve_reward(spec: str) -> Reward:
    """``--reward``: ``boxed``, ``number`` or ``module:function`` (importable from here)."""
    if spec in _BUILTIN:
        return _BUILTIN[spec]
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise UserError(f"unknown --reward {spec!r}; pass boxed, number, or module:function")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        raise UserError(
            f"--reward {spec}: cannot import {module_name} ({exc}); is it on PYTHONPATH?"
        ) from exc
    func = getattr(module, name, None)
    if not callable(func):
        raise UserError(f"--reward {spec}: {module_name} has no function {name!r}")
    return func
