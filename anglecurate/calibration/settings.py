"""calibrate's options, checked before anything is read or loaded, and which of them a rerun
must repeat to resume.

Two kinds of option:

- **rollout settings** decide what a prompt's completions and rewards are (which rows,
  how many completions, how long, how hot, which seed, which reward against which
  answers): a folder's finished prompts are reused only under the same ones, and a rerun
  with others is refused in one line unless ``--overwrite``;
- everything else (the device, the dtype, the engine, the batch budget, the fit's folds,
  bootstrap and features) changes how the work is done or read, not what was measured: a
  rerun with another value resumes, and the fit is always redone from the stored rollouts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from anglecurate.base.errors import UserError
from anglecurate.rewards.registry import resolve_reward

ROLLOUT_SETTINGS = (
    "sample",
    "samples_per_prompt",
    "reward",
    "answer_field",
    "max_new_tokens",
    "temperature",
    "seed",
)


@dataclass
class CalibrateConfig:
    """Everything `anglecurate calibrate` takes (``ac.calibrate``'s keywords)."""

    ranking: str
    sample: int = 256  # prompts rolled out, one per stratum of the ranking's order
    samples_per_prompt: int = 8  # k: completions per prompt, a GRPO group
    reward: str = "number"  # boxed, number or module:function (anglecurate.rewards.registry)
    answer_field: str = "answer"  # the reference answers the reward compares with (dotted: a struct field)
    max_new_tokens: int = 256
    temperature: float = 1.0  # the training temperature; 0 (greedy) gives a group no variance
    seed: int = 0  # the sample, the sampling, the fit's folds and bootstrap
    device: str = "auto"
    dtype: str = "auto"
    engine: str = "auto"  # auto, hf or vllm (anglecurate.generation.engine)
    max_batch_tokens: int | None = (
        None  # HF generate's budget, sequences x (prompt + new tokens); None: 32768
    )
    chat_template: str | None = None  # a Jinja file the ranking was scored with (a built-in is recorded)
    embed: bool = False  # also fit on the pooled hidden state of a `score --embed` run
    folds: int = 5
    bootstrap: int = 1000
    overwrite: bool = False

    def validate(self) -> None:
        """One line for each option that cannot work, before anything is read."""
        k = self.samples_per_prompt
        if k < 2:
            raise UserError(
                f"--samples-per-prompt {k}: GRPO learns from a group's differences, so k must be 2 or "
                "more (the pass rate and the group's reward variance need at least two completions)"
            )
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise UserError(f"--temperature must be 0 or more, got {self.temperature}")
        if self.temperature == 0:
            raise UserError(
                f"--temperature 0 is greedy: the {k} completions of a prompt would be one answer {k} "
                "times, with no reward variance; pass the training temperature (e.g. 1.0)"
            )
        if self.sample < 1:
            raise UserError(f"--sample must be at least 1, got {self.sample}")
        for name in ("max_new_tokens", "max_batch_tokens", "bootstrap"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.folds < 2:
            raise UserError(f"--folds must be 2 or more (held-out folds), got {self.folds}")
        from anglecurate.generation.engine import ENGINES  # torch: only once a command runs

        if self.engine not in ENGINES:
            raise UserError(f"--engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        resolve_reward(self.reward)  # an unknown reward fails before anything loads

    def rollout_settings(self, rows: list[int] | None = None) -> dict:
        """What a stored prompt was rolled out under (``rows``: a caller's own rows instead
        of the sample)."""
        settings = {name: getattr(self, name) for name in ROLLOUT_SETTINGS}
        settings["temperature"] = float(settings["temperature"])
        if rows is not None:
            settings["sample"] = None
            settings["rows"] = sorted(int(r) for r in rows)
        return settings

    @property
    def batch_tokens(self) -> int:
        """The HF generation budget: the option, else generation's default."""
        from anglecurate.generation.hf import DEFAULT_BATCH_TOKENS

        return self.max_batch_tokens or DEFAULT_BATCH_TOKENS

    def to_dict(self) -> dict:
        return asdict(self)


def changed(previous: dict, current: dict) -> list[str]:
    """The rollout settings that differ between two runs, as options (``--seed``), in order."""
    keys = [*ROLLOUT_SETTINGS, "rows"]
    return [_option(k) for k in keys if previous.get(k) != current.get(k)]


def _option(name: str) -> str:
    return "rows" if name == "rows" else f"--{name.replace('_', '-')}"
