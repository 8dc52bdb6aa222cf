"""HF generate in budgeted left-padded batches: greedy equals a hand loop token for token,
seeded sampling is reproducible whatever the batches, the global RNG is left alone."""

from __future__ import annotations

import math

import pytest
import torch

from anglecurate.base.errors import UserError
from anglecurate.generation.hf import GumbelSampler, HFEngine
from anglecurate.generation.request import make_request, prompt_ids, stop_ids
from tests.helpers import greedy_by_hand

MAX_NEW = 8


def _stop_inside(policy, tokenizer, prompts, monkeypatch) -> frozenset[int]:
    """Make a token the hand loop writes mid-answer a stop token too, so answers end at
    different lengths (a random model never writes EOS by itself)."""
    ids = prompt_ids(tokenizer, make_request(tokenizer, prompts, MAX_NEW))
    first = greedy_by_hand(policy, ids[0], MAX_NEW, stops=set())
    monkeypatch.setattr(policy.generation_config, "eos_token_id", [tokenizer.eos_token_id, first[3]])
    return stop_ids(policy, tokenizer)


@pytest.mark.parametrize("chat", [True, False], ids=["conversations", "plain-text"])
def test_greedy_batches_equal_a_hand_loop(policy, tokenizer, ragged_prompts, monkeypatch, chat):
    prompts = ragged_prompts if chat else [p[0]["content"] for p in ragged_prompts]
    stops = _stop_inside(policy, tokenizer, prompts, monkeypatch)
    request = make_request(tokenizer, prompts, MAX_NEW)
    ids = prompt_ids(tokenizer, request)
    assert len({len(p) for p in ids}) == len(ids)  # ragged: every prompt pads differently
    engine = HFEngine(policy, tokenizer, max_batch_tokens=2 * (max(map(len, ids)) + MAX_NEW))
    batches = engine.plan(request, ids)
    assert len(batches) >= 3
    for batch in batches:  # the budget holds, longest prompt first
        assert len(batch) * (max(len(ids[i]) for i, _ in batch) + MAX_NEW) <= engine.max_batch_tokens

    result = engine.generate(request)

    by_hand = [[greedy_by_hand(policy, p, MAX_NEW, stops)] for p in ids]
    assert result.token_ids == by_hand
    lengths = {len(row[0]) for row in by_hand}
    assert min(lengths) < MAX_NEW and MAX_NEW in lengths  # some stopped early, some ran out
    assert len({tuple(row[0]) for row in by_hand}) == len(ids)  # answers depend on the prompt
    assert result.completions == [[tokenizer.decode(row[0], skip_special_tokens=True)] for row in by_hand]
    assert result.prompt_tokens == [len(p) for p in ids]
    assert result.generated_tokens == sum(len(row[0]) for row in by_hand)
    assert result.engine == "hf"


def test_seeded_sampling_does_not_depend_on_batches_or_neighbours(policy, tokenizer, ragged_prompts):
    prompts = ragged_prompts[:3]

    def sample(prompts, budget, seed=3, streams=None):
        request = make_request(tokenizer, prompts, MAX_NEW, k=2, temperature=1.0, seed=seed, streams=streams)
        return HFEngine(policy, tokenizer, max_batch_tokens=budget).generate(request).token_ids

    one_by_one = sample(prompts, budget=1)  # every sequence alone
    all_at_once = sample(prompts, budget=10**6)  # one batch, padded to the longest
    assert one_by_one == all_at_once
    assert sample(prompts, budget=10**6) == all_at_once  # the same seed, the same samples
    assert sample(prompts, budget=10**6, seed=4) != all_at_once
    # A prompt asked alone, or with the order reversed, draws what it drew among the rest
    # when its stream (here its position in the full list) is named.
    assert sample(prompts[1:2], budget=10**6, streams=[1]) == all_at_once[1:2]
    assert sample(prompts[::-1], budget=10**6, streams=[2, 1, 0]) == all_at_once[::-1]
    assert all(row[0] != row[1] for row in all_at_once)  # two samples, two answers


def test_the_sampler_draws_from_the_softmax_at_the_temperature():
    # Many rows, one seed each, the same logits: the argmax of logits / T + Gumbel noise is
    # distributed as softmax(logits / T).
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    rows = 8000
    for temperature in (1.0, 0.5):
        sampler = GumbelSampler(temperature, seeds=list(range(rows)))
        picked = sampler(None, logits.expand(rows, -1).clone()).argmax(-1)
        freq = torch.bincount(picked, minlength=4).double() / rows
        expected = torch.softmax(logits.double() / temperature, -1)
        assert torch.allclose(freq, expected, atol=4 * math.sqrt(0.25 / rows))


def test_k_samples_per_prompt(policy, tokenizer, ragged_prompts):
    request = make_request(tokenizer, ragged_prompts[:3], MAX_NEW, k=4, temperature=1.0, seed=0)
    result = HFEngine(policy, tokenizer).generate(request)
    assert [len(row) for row in result.token_ids] == [4, 4, 4]
    assert [len(row) for row in result.completions] == [4, 4, 4]
    assert all(len({tuple(s) for s in row}) == 4 for row in result.token_ids)  # four draws each
    assert all(s for row in result.token_ids for s in row)
    assert result.generated_tokens == sum(len(s) for row in result.token_ids for s in row)


def test_the_global_rng_mode_and_tokenizer_are_left_as_they_were(policy, tokenizer, ragged_prompts):
    # The sampler draws from its own generators; the hook stands for anything in a model's
    # forward that draws from the global one (a custom layer, dropout left on).
    def draw(*_):
        torch.rand(1)

    hook = policy.model.register_forward_pre_hook(draw)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    side = tokenizer.padding_side
    policy.train()
    try:
        for temperature in (0.0, 1.0):
            request = make_request(tokenizer, ragged_prompts, 4, temperature=temperature, seed=0)
            HFEngine(policy, tokenizer).generate(request)
            assert torch.equal(torch.get_rng_state(), state)
            assert policy.training
            assert tokenizer.padding_side == side
    finally:
        hook.remove()
        policy.eval()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"k": 2, "temperature": 0.0}, "temperature above 0"),
        ({"k": 0, "temperature": 1.0}, "samples per prompt"),
        ({"temperature": -1.0}, "temperature"),
        ({"max_new": 0}, "max new tokens"),
    ],
)
def test_a_bad_request_is_a_one_line_user_error(tokenizer, ragged_prompts, kwargs, needle):
    max_new = kwargs.pop("max_new", MAX_NEW)
    with pytest.raises(UserError, match=needle) as err:
        make_request(tokenizer, ragged_prompts, max_new, **kwargs)
    assert "\n" not in str(err.value)
