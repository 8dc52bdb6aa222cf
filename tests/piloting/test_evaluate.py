"""The pilot's held-out evaluation is the generation engine plus the one grade: HF by
default, the trainer's colocated vLLM engine when training uses one."""

from __future__ import annotations

from anglecurate.generation import vllm as vllm_engine
from anglecurate.generation.graded import grade
from anglecurate.generation.hf import HFEngine
from anglecurate.generation.request import make_request
from anglecurate.piloting.evaluate import evaluate
from tests.generation.fakes import FakeHolder, FakeLLM, FakeSamplingParams, fake_trainer


def long_answer(completions, answer, **_):
    """Deterministic: 1 where the completion is longer than ``answer`` characters."""
    return [float(len(c[0]["content"]) > int(a)) for c, a in zip(completions, answer, strict=True)]


def test_accuracy_and_tokens_are_the_graded_hf_generation(policy, tokenizer, ragged_prompts):
    answers = ["10", "20", "30", "40", "1000"]
    accuracy, tokens = evaluate(policy, tokenizer, ragged_prompts, answers, long_answer, 6)
    result = HFEngine(policy, tokenizer).generate(make_request(tokenizer, ragged_prompts, 6))
    graded = grade(result, long_answer, answers)
    assert (accuracy, tokens) == (graded.accuracy, result.generated_tokens)
    assert 0 < accuracy < 1  # the reward tells the answers apart
    assert tokens == 5 * 6  # a random model writes no stop token


def test_training_with_colocated_vllm_evaluates_on_that_engine(
    policy, tokenizer, ragged_prompts, monkeypatch
):
    monkeypatch.setattr(vllm_engine, "sampling_params_class", lambda: FakeSamplingParams)
    llm = FakeLLM(policy)
    holder = FakeHolder(llm)
    trainer = fake_trainer(holder, step=5)
    answers = ["10", "20", "30", "40", "1000"]
    shared = evaluate(policy, tokenizer, ragged_prompts, answers, long_answer, 6, trainer=trainer)
    assert len(llm.calls) == 1 and holder.syncs == 1  # generated there, with step 5's weights
    assert shared == evaluate(
        policy, tokenizer, ragged_prompts, answers, long_answer, 6
    )  # greedy: same answers
