"""What a calibration costs: the bound said before it starts, and what it took, after. Pure.

Before: prompts x k completions, and the most tokens they can generate (each completion
runs at most ``--max-new-tokens``), with the prompt tokens every completion reads. After:
the tokens generated (stop tokens included, as TRL counts) and the wall seconds, summed
over every invocation that rolled out a prompt of the sample (a resumed run adds to what
the killed one did), and this invocation's alone, with the model's loading time and the
fit's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Planned:
    """The bound on a calibration's generation, before it starts."""

    prompts: int
    k: int
    max_new_tokens: int
    prompt_tokens: int  # the sampled prompts' rendered tokens, summed (each read by k completions)
    done: int  # prompts already finished (a resumed run)

    @property
    def completions(self) -> int:
        return self.prompts * self.k

    @property
    def max_generated_tokens(self) -> int:
        return self.completions * self.max_new_tokens

    def line(self) -> str:
        text = (
            f"calibrate: {self.prompts:,} prompts x {self.k} completions = {self.completions:,} "
            f"completions, at most {self.max_generated_tokens:,} generated tokens "
            f"({self.max_new_tokens:,} each), over {self.prompt_tokens:,} prompt tokens read "
            f"{self.k} times each"
        )
        if self.done:
            left = self.prompts - self.done
            text += f"; {self.done:,} prompts done already, {left:,} to generate"
        return text

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "samples_per_prompt": self.k,
            "completions": self.completions,
            "max_new_tokens": self.max_new_tokens,
            "max_generated_tokens": self.max_generated_tokens,
            "prompt_tokens": self.prompt_tokens,
            "done_before": self.done,
        }


def recorded(
    records: Sequence[dict],
    this_run: dict,
) -> dict:
    """``calibrate.json``'s ``cost.recorded``: over every finished prompt of the sample
    (``records``, the stored prompt files), and this invocation's ``this_run``."""
    tokens = sum(sum(r["completion_tokens"]) for r in records)
    seconds = sum(float(r["seconds"]) for r in records)
    completions = sum(len(r["completion_tokens"]) for r in records)
    return {
        "generated_tokens": tokens,
        "completions": completions,
        "mean_completion_tokens": round(tokens / completions, 2) if completions else None,
        "generation_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        "this_run": this_run,
    }


def summary_line(cost: dict) -> str:
    """One line of what it took, from ``calibrate.json``'s ``cost.recorded``."""
    now = cost["this_run"]
    return (
        f"generated {cost['generated_tokens']:,} tokens in {cost['completions']:,} completions "
        f"({cost['generation_seconds']:,.1f} s of generation in all; this run: "
        f"{now['prompts']:,} prompts, {now['wall_seconds']:,.1f} s wall)"
    )
