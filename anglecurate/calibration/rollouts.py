"""k completions per sampled prompt, rewarded, stored one prompt at a time.

Each prompt is the conversation its row was scored as (the run's system prompt and worked
example, or the bare user turn, as the manifest's prompt config says), rendered by the
chat template it was scored with, generation prompt included: the text scoring read is
the text the policy continues. Generation goes through the one generation path
(:mod:`anglecurate.generation`: HF ``generate`` in budgeted batches, or vLLM), at the
training temperature; sample ``j`` of a row draws from a seed keyed by (``--seed``, the
row's ``row_index``, ``j``), so a prompt's completions do not depend on which prompts share
its batch, nor on a resume. The reward is the one reward system's
(:func:`anglecurate.generation.graded.grade`).

The store, ``OUT/.anglecurate-calibrate/``::

    settings.json           the rollout settings, the scoring run they belong to, the sample
    prompts/ROW.json        one finished prompt (ROW: its row_index), written atomically

A prompt is finished when its file exists, so a killed run resumes at the first unfinished
prompt; the prompts of one generate call (about one batch) are written together, so a kill
costs at most that call's work.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anglecurate.generation.graded import grade
from anglecurate.generation.request import GenerationRequest
from anglecurate.storage.atomic import atomic_write_json, read_json

STORE = ".anglecurate-calibrate"
VLLM_PROMPTS_PER_CALL = 256  # vLLM schedules its own batches; a call this size keeps it busy


@dataclass(frozen=True)
class Prompt:
    """One sampled row, ready to generate for: its conversation as scored (what the reward
    receives as ``prompts``), that conversation rendered (what the policy continues), its
    rendered length in tokens and its reference answer."""

    row_index: int
    uid: object
    messages: list
    text: str
    tokens: int
    answer: str


@dataclass
class Rolled:
    """What one invocation generated: prompts finished, tokens generated, wall seconds."""

    prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0


class RolloutStore:
    """``OUT/.anglecurate-calibrate/``: the settings the prompts were rolled out under, and
    one JSON file per finished prompt."""

    def __init__(self, root: Path):
        self.path = Path(root) / STORE

    @property
    def settings_path(self) -> Path:
        return self.path / "settings.json"

    @property
    def prompt_dir(self) -> Path:
        return self.path / "prompts"

    def read_settings(self) -> dict | None:
        return read_json(self.settings_path)

    def start(self, settings: dict) -> None:
        self.prompt_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.prompt_dir.glob(".*.tmp-*"):  # a write cut by a kill
            stale.unlink(missing_ok=True)
        atomic_write_json(settings, self.settings_path)

    def clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def done(self, rows: Sequence[int]) -> dict[int, dict]:
        """The finished prompts among ``rows``, by row_index (a file that does not parse is
        generated again)."""
        found = {}
        for row in rows:
            path = self.prompt_dir / f"{int(row)}.json"
            if path.is_file():
                try:
                    found[int(row)] = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
        return found

    def write(self, record: dict) -> None:
        atomic_write_json(record, self.prompt_dir / f"{record['row_index']}.json")


def prompts_per_call(engine: str, max_batch_tokens: int, k: int, longest: int, max_new_tokens: int) -> int:
    """Prompts per generate call: about one HF batch under the token budget (its k
    sequences of prompt + new tokens each), so writing per call loses no batching; vLLM,
    which batches inside, gets :data:`VLLM_PROMPTS_PER_CALL`."""
    if engine == "vllm":
        return VLLM_PROMPTS_PER_CALL
    return max(1, max_batch_tokens // (k * (longest + max_new_tokens)))


def roll_out(
    engine,
    prompts: Sequence[Prompt],
    reward,
    store: RolloutStore,
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_batch_tokens: int,
    advance: Callable[[int, int], None] = lambda rows, tokens: None,
) -> Rolled:
    """Generate, grade and store every prompt of ``prompts`` (the unfinished ones), longest
    first, a call of :func:`prompts_per_call` prompts at a time; ``advance(prompts,
    tokens)`` after each call."""
    rolled = Rolled()
    pending = sorted(prompts, key=lambda p: -p.tokens)  # as the HF planner sorts: less padding
    while pending:
        size = prompts_per_call(engine.name, max_batch_tokens, k, pending[0].tokens, max_new_tokens)
        group, pending = pending[:size], pending[size:]
        t0 = time.perf_counter()
        request = GenerationRequest(
            prompts=tuple(p.messages for p in group),
            texts=tuple(p.text for p in group),
            chat=True,  # rendered by the chat template: no special tokens added again
            max_new_tokens=max_new_tokens,
            k=k,
            temperature=float(temperature),
            seed=seed,
            streams=tuple(p.row_index for p in group),
        )
        result = engine.generate(request)
        graded = grade(result, reward, [p.answer for p in group])
        seconds = time.perf_counter() - t0
        for i, p in enumerate(group):
            store.write(
                {
                    "row_index": p.row_index,
                    "uid": p.uid,
                    "k": k,
                    "pass_rate": graded.pass_rate[i],
                    "has_variance": graded.has_variance[i],
                    "rewards": graded.rewards[i],
                    "raw_rewards": graded.raw[i],
                    "completions": result.completions[i],
                    "completion_tokens": [len(ids) for ids in result.token_ids[i]],
                    "prompt_tokens": result.prompt_tokens[i],
                    "seconds": seconds / len(group),  # the call's wall time, shared out
                    "engine": result.engine,
                }
            )
        tokens = result.generated_tokens
        rolled.prompts += len(group)
        rolled.generated_tokens += tokens
        rolled.seconds += seconds
        advance(len(group), tokens)
    return rolled
