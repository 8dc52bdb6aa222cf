"""The one place a reward meets generated completions: per completion, per prompt, overall.

The reward is any function of :mod:`anglecurate.rewards.registry` (TRL's signature), called
once over every completion, flattened prompt by prompt (sample 0..k-1 of prompt 0, then of
prompt 1, ...), with keyword lists as TRL passes them: ``prompts`` (each prompt as the
dataset holds it, repeated k times), ``completions`` (strings, or TRL's conversational
``[{"role": "assistant", "content": ...}]`` when the prompts were conversations),
``answer`` and any other per-prompt column, each repeated k times.

From its raw values:

- ``rewards[i][j]``  clipped to [0, 1] (``None``, a reward's "no opinion", and NaN are 0):
  what a pass counts; ``pass_rate[i]`` is their mean over prompt i's k samples, and
  ``accuracy`` the mean over every completion (pass@1 for the built-in 0/1 rewards);
- ``has_variance[i]``  the k raw rewards of prompt i are not all equal (``None`` and NaN as
  0, as TRL's ``nansum`` counts a missing reward): the group gives GRPO an advantage to
  learn from. Always False at k = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from anglecurate.base.errors import UserError
from anglecurate.generation.request import GenerationResult


def _number(value) -> float:
    return 0.0 if value is None or math.isnan(float(value)) else float(value)


def groups_with_variance(values, k: int) -> list[bool]:
    """For each consecutive group of ``k`` raw rewards (TRL's layout: the k completions of
    one prompt in a row), whether they are not all equal, ``None`` and NaN counting 0. A
    group without variance has every advantage 0: GRPO learns nothing from it."""
    numbers = [_number(v) for v in values]
    if k < 1 or len(numbers) % k:
        raise ValueError(f"{len(numbers)} rewards do not make groups of {k}")
    return [max(numbers[i : i + k]) > min(numbers[i : i + k]) for i in range(0, len(numbers), k)]


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)


@dataclass(frozen=True)
class Graded:
    """Rewards of a :class:`GenerationResult`: [prompt][sample] lists, and per prompt."""

    raw: list[list[float]]
    rewards: list[list[float]]
    pass_rate: list[float]
    has_variance: list[bool]

    @property
    def accuracy(self) -> float:
        """Mean clipped reward over every completion; 0.0 when there are none."""
        flat = [r for row in self.rewards for r in row]
        return sum(flat) / len(flat) if flat else 0.0


def grade(result: GenerationResult, reward, answers: list, **columns: list) -> Graded:
    """Apply ``reward`` to every completion of ``result``; ``answers`` and each of
    ``columns`` hold one value per prompt."""
    request = result.request
    k = request.k
    for name, values in {"answer": answers, **columns}.items():
        if len(values) != len(request):
            raise ValueError(f"{len(values)} values of {name} for {len(request)} prompts")
    texts = [c for row in result.completions for c in row]
    completions = [[{"role": "assistant", "content": c}] for c in texts] if request.chat else texts
    repeat = lambda values: [v for v in values for _ in range(k)]  # noqa: E731
    values = (
        reward(
            prompts=repeat(request.prompts),
            completions=completions,
            answer=repeat(answers),
            **{name: repeat(v) for name, v in columns.items()},
        )
        if texts
        else []
    )
    values = list(values)
    if len(values) != len(texts):
        name = getattr(reward, "__name__", "the reward")
        raise UserError(f"reward {name} returned {len(values)} values for {len(texts)} completions")
    raw = [[_number(v) for v in values[i * k : (i + 1) * k]] for i in range(len(request))]
    rewards = [[_clip(v) for v in row] for row in raw]
    return Graded(
        raw=raw,
        rewards=rewards,
        pass_rate=[sum(row) / k for row in rewards],
        has_variance=groups_with_variance(values, k),
    )
