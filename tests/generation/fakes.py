"""Fakes of vLLM and of TRL's colocated engine, with the interfaces the adapter uses.

The fake ``LLM`` answers greedy requests with the hand loop on the tiny policy (as a
deterministic vLLM would), and sampled ones with tokens drawn from the request's own seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from tests.helpers import greedy_by_hand


@dataclass
class FakeSamplingParams:
    """vLLM's ``SamplingParams`` keywords that the adapter sets."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    stop_token_ids: list = field(default_factory=list)
    seed: int | None = None


class FakeLLM:
    """``generate(prompts, sampling_params, use_tqdm)`` as ``vllm.LLM`` has it: one output
    per prompt, ``n`` completions each (returned out of index order, as vLLM may)."""

    def __init__(self, policy):
        self.policy = policy
        self.calls = []
        self.awake = True

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert self.awake, "generate on a sleeping engine"
        assert len(sampling_params) == len(prompts)
        self.calls.append((prompts, sampling_params))
        torch.rand(3)  # a library drawing from the global RNG: the adapter must fence it off
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            ids, stops = prompt["prompt_token_ids"], set(params.stop_token_ids)
            if params.temperature == 0:
                samples = [greedy_by_hand(self.policy, ids, params.max_tokens, stops)]
            else:
                rng = random.Random(params.seed)
                samples = [
                    [rng.randrange(3, 1000) for _ in range(params.max_tokens)] for _ in range(params.n)
                ]
            completions = [SimpleNamespace(index=j, token_ids=tuple(s)) for j, s in enumerate(samples)]
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=completions[::-1]))
        return outputs

    def sleep(self, level):
        assert level == 2
        self.awake = False

    def wake_up(self, tags):
        assert tags == ["kv_cache"]
        self.awake = True


class FakeHolder:
    """TRL 1.x's ``VLLMGeneration`` as GRPOTrainer keeps it: ``.llm``, ``.mode``, ``.sync_weights``."""

    def __init__(self, llm, mode="colocate", sleep=False):
        self.llm, self.mode, self.enable_sleep_mode = llm, mode, sleep
        self._llm_weights_sleeping = sleep
        self.syncs = 0

    def sync_weights(self):
        self.syncs += 1
        self._llm_weights_sleeping = False


def fake_trainer(holder, step=0):
    return SimpleNamespace(
        use_vllm=True, vllm_generation=holder, state=SimpleNamespace(global_step=step), _last_loaded_step=-1
    )
