"""The pilot's reward functions: MATH-style boxed answers, last numbers, user functions."""

from __future__ import annotations

import sys

import pytest

from anglecurate.base.errors import UserError
from anglecurate.rewards.answers import last_boxed, normalize_answer
from anglecurate.rewards.registry import (
    boxed_reward,
    number_reward,
    resolve_reward,
)


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("so the answer is \\boxed{\\dfrac{1}{2}}.", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\frac12}", "\\frac{1}{2}", 1.0),
        ("\\boxed{ 1/2 }", "\\frac{1}{2}", 1.0),
        ("\\boxed{\\left( 3, 4 \\right)}", "(3,4)", 1.0),
        ("\\boxed{90^\\circ}", "90", 1.0),
        ("\\boxed{.5}", "0.5", 1.0),
        ("\\boxed{2.0}", "2", 1.0),
        ("\\boxed{\\text{(B)}}", "(B)", 1.0),
        ("first \\boxed{3} then \\boxed{4}", "4", 1.0),  # the last box counts
        ("first \\boxed{3} then \\boxed{4}", "3", 0.0),
        ("the answer is 4", "4", 0.0),  # no box: no reward
        ("\\boxed{x^{2}+1}", "x^{2}+1", 1.0),  # nested braces
        ("\\boxed{5", "5", 0.0),  # unbalanced
    ],
)
def test_boxed_reward(completion, answer, expected):
    assert boxed_reward([completion], [answer]) == [expected]


def test_last_boxed_reads_nested_braces():
    assert last_boxed("\\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"
    assert normalize_answer("\\$1,000") != normalize_answer("7")


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("9 * 5 = 45", "45", 1.0),
        ("45", "45", 1.0),
        ("It is 1,234.", "1234", 1.0),
        ("-7", "-7", 1.0),
        ("17 + 35 - 4 = 40\n\nThis", "48", 0.0),
        ("no digits here", "3", 0.0),
        ("0.50", ".5", 1.0),
        ("3", "three", 0.0),  # an answer that is not a number never matches
    ],
)
def test_number_reward(completion, answer, expected):
    assert number_reward([completion], [answer]) == [expected]


def test_conversational_completions_are_read():
    completion = [{"role": "assistant", "content": "7 * 6 = 42"}]
    assert number_reward([completion], ["42"]) == [1.0]


def test_one_resolver_for_builtins_and_user_functions(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def exact(completions, answer, **kw):\n    return [1.0] * len(answer)\n"
    )
    (tmp_path / "broken_rewards.py").write_text("import no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_reward("boxed") is boxed_reward and resolve_reward("number") is number_reward
    assert resolve_reward("my_rewards:exact")(completions=["x"], answer=["y"]) == [1.0]
    cases = [
        ("my_rewards:missing", "--reward my_rewards:missing: my_rewards has no function 'missing'"),
        ("exact", "unknown --reward 'exact'; pass boxed, number, or module:function"),
        (":exact", "unknown --reward ':exact'"),
        ("my_rewards:", "unknown --reward 'my_rewards:'"),
        ("no_such_rewards:f", "--reward no_such_rewards:f: cannot import no_such_rewards"),
        ("broken_rewards:f", "cannot import broken_rewards (No module named 'no_such_module_here')"),
    ]
    for spec, message in cases:
        with pytest.raises(UserError) as caught:
            resolve_reward(spec)
        assert message in str(caught.value) and "\n" not in str(caught.value), spec


def test_a_user_reward_with_trls_signature_drives_validates_rl_target(tmp_path, monkeypatch, tiny_model_dir):
    """A ``module:function`` written for TRL (prompts, completions, answer as keyword lists,
    conversational completions) is the RL target's reward as it is."""
    import torch
    from transformers import AutoTokenizer

    from anglecurate.evidence import gradients
    from anglecurate.model.load import load_config, load_model, resolve_source

    (tmp_path / "trl_rewards.py").write_text(
        "CALLS = []\n"
        "def long_enough(prompts, completions, answer, **kwargs):\n"
        "    CALLS.append((prompts, completions, answer))\n"
        "    return [float(len(c[0]['content']) > 8) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = resolve_reward("trl_rewards:long_enough")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    source = resolve_source(str(tiny_model_dir))
    model = load_model(source, load_config(source), torch.float32, torch.device("cpu"), causal_lm=True)
    probe = torch.tensor([[0, 1]])
    projections = gradients.mlp_input_projections(
        model.mlps, lambda: model.base(input_ids=probe, use_cache=False)
    )
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    result = gradients.rl_target(
        model.base, tokenizer, ids, "4", projections, reward, 6, 6, 0, prompt=messages
    )
    ((prompts, completions, answer),) = sys.modules["trl_rewards"].CALLS
    assert prompts == [messages] * 6 and answer == ["4"] * 6
    assert all(c[0]["role"] == "assistant" for c in completions)
    expected = sum(len(c[0]["content"]) > 8 for c in completions) / 6
    assert result["pass_rate"] == pytest.approx(expected)
    assert result["zero_variance"] == (expected in (0.0, 1.0))
    assert (result["rl_grad_norm"] > 0) == (not result["zero_variance"])
