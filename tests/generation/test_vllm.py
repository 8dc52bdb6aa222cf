"""The vLLM adapter and the dispatch, against a fake ``vllm.LLM`` (tests/generation/fakes.py):
vLLM is not installed here, so these check what the adapter sends and how it reads the
answer, not vLLM itself."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from anglecurate.base.errors import UserError
from anglecurate.generation import engine as dispatch
from anglecurate.generation import vllm as vllm_engine
from anglecurate.generation.hf import HFEngine
from anglecurate.generation.request import make_request
from anglecurate.generation.vllm import VllmEngine
from tests.generation.fakes import FakeHolder, FakeLLM, FakeSamplingParams, fake_trainer

MAX_NEW = 6


@pytest.fixture
def fake_params(monkeypatch):
    monkeypatch.setattr(vllm_engine, "sampling_params_class", lambda: FakeSamplingParams)


def test_greedy_through_vllm_matches_the_hf_path(policy, tokenizer, ragged_prompts, fake_params):
    request = make_request(tokenizer, ragged_prompts, MAX_NEW)
    llm = FakeLLM(policy)
    result = VllmEngine(llm, policy, tokenizer).generate(request)
    assert result.token_ids == HFEngine(policy, tokenizer).generate(request).token_ids
    assert result.engine == "vllm"
    prompts, params = llm.calls[0]
    expected_ids = tokenizer(list(request.texts), add_special_tokens=False)["input_ids"]
    assert [p["prompt_token_ids"] for p in prompts] == expected_ids  # the ids HF gets
    assert {(p.n, p.temperature, p.max_tokens) for p in params} == {(1, 0.0, MAX_NEW)}
    assert tokenizer.eos_token_id in params[0].stop_token_ids


def test_sampled_requests_carry_k_and_a_seed_per_prompt(policy, tokenizer, ragged_prompts, fake_params):
    request = make_request(tokenizer, ragged_prompts, MAX_NEW, k=3, temperature=0.7, seed=5)
    llm = FakeLLM(policy)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    result = VllmEngine(llm, policy, tokenizer).generate(request)
    assert torch.equal(torch.get_rng_state(), state)
    params = llm.calls[0][1]
    assert [p.seed for p in params] == [request.seed_of(i) for i in range(len(ragged_prompts))]
    assert len({p.seed for p in params}) == len(params)
    assert {(p.n, p.temperature) for p in params} == {(3, 0.7)}
    assert [len(row) for row in result.token_ids] == [3] * len(ragged_prompts)
    # Samples come back in index order whatever order vLLM lists them in.
    first = random.Random(params[0].seed)
    assert result.token_ids[0][0] == [first.randrange(3, 1000) for _ in range(MAX_NEW)]
    assert VllmEngine(FakeLLM(policy), policy, tokenizer).generate(request).token_ids == result.token_ids


def test_a_trainers_colocated_engine_is_shared_with_fresh_weights(
    policy, tokenizer, ragged_prompts, fake_params
):
    llm = FakeLLM(policy)
    holder = FakeHolder(llm)
    trainer = fake_trainer(holder, step=0)
    engine = dispatch.pick_engine(policy, tokenizer, trainer=trainer)
    assert isinstance(engine, VllmEngine) and engine.llm is llm  # no second engine
    request = make_request(tokenizer, ragged_prompts[:2], MAX_NEW)
    engine.generate(request)
    assert (holder.syncs, trainer._last_loaded_step) == (1, 0)
    engine.generate(request)  # the same step: the weights are already there
    assert holder.syncs == 1
    trainer.state.global_step = 1  # an optimizer step later: pushed again, once
    engine.generate(request)
    assert (holder.syncs, trainer._last_loaded_step) == (2, 1)


def test_sleep_mode_wakes_the_cache_and_sleeps_again(policy, tokenizer, ragged_prompts, fake_params):
    llm = FakeLLM(policy)
    llm.awake = False
    holder = FakeHolder(llm, sleep=True)
    trainer = fake_trainer(holder, step=3)
    trainer._last_loaded_step = 3  # weights tagged current, but discarded by sleep level 2
    dispatch.pick_engine(policy, tokenizer, trainer=trainer).generate(
        make_request(tokenizer, ragged_prompts, 2)
    )
    assert holder.syncs == 1
    assert not llm.awake and holder._llm_weights_sleeping


def test_trl_0_2x_layout_is_shared_too(policy, tokenizer, ragged_prompts, fake_params):
    llm = FakeLLM(policy)
    moved = []
    trainer = SimpleNamespace(
        use_vllm=True,
        vllm_mode="colocate",
        llm=llm,
        state=SimpleNamespace(global_step=2),
        _last_loaded_step=1,
        _move_model_to_vllm=lambda: moved.append(1),
    )
    engine = dispatch.pick_engine(policy, tokenizer, trainer=trainer)
    assert engine.llm is llm
    engine.generate(make_request(tokenizer, ragged_prompts[:1], 2))
    assert moved == [1] and trainer._last_loaded_step == 2


def test_without_a_colocated_engine_the_trainer_gets_hf(policy, tokenizer):
    server = fake_trainer(FakeHolder(FakeLLM(policy), mode="server"))
    hf_trainer = SimpleNamespace(use_vllm=False)
    for trainer in (server, hf_trainer, None):
        assert isinstance(dispatch.pick_engine(policy, tokenizer, engine="auto", trainer=trainer), HFEngine)
    assert isinstance(
        dispatch.pick_engine(policy, tokenizer, engine="hf", trainer=fake_trainer(FakeHolder(None))), HFEngine
    )


def test_auto_starts_vllm_only_without_a_trainer_where_it_can(policy, tokenizer, monkeypatch):
    monkeypatch.setattr(dispatch, "vllm_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(VllmEngine, "start", classmethod(lambda cls, model, tok: "fresh"))
    assert dispatch.pick_engine(policy, tokenizer) == "fresh"
    assert isinstance(
        dispatch.pick_engine(policy, tokenizer, trainer=SimpleNamespace(use_vllm=False)), HFEngine
    )


@pytest.mark.parametrize(
    ("installed", "gpu", "trainer", "needle"),
    [
        (False, True, None, "vllm package, which is not installed"),
        (True, False, None, "needs a CUDA GPU"),
        (True, True, SimpleNamespace(use_vllm=False), "needs its colocated vLLM engine"),
    ],
)
def test_vllm_refused_where_it_cannot_run_in_one_line(
    policy, tokenizer, monkeypatch, installed, gpu, trainer, needle
):
    monkeypatch.setattr(dispatch, "vllm_available", lambda: installed)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    with pytest.raises(UserError, match=needle) as err:
        dispatch.pick_engine(policy, tokenizer, engine="vllm", trainer=trainer)
    assert "\n" not in str(err.value)


def test_vllm_is_refused_here_where_it_is_not_installed(policy, tokenizer):
    # The real check, unpatched: this machine has no vllm.
    if dispatch.vllm_available():
        pytest.skip("vllm is installed here")
    with pytest.raises(UserError, match="not installed") as err:
        dispatch.pick_engine(policy, tokenizer, engine="vllm")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown generation engine"):
        dispatch.pick_engine(policy, tokenizer, engine="sglang")
