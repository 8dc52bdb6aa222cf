"""The pilot's reward functions: MATH-style boxed answers, last numbers, user functions."""

from __future__ import annotations

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


def test_resolve_reward_imports_a_user_function(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def exact(completions, answer, **kw):\n    return [1.0] * len(answer)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_reward("my_rewards:exact")(completions=["x"], answer=["y"]) == [1.0]
    with pytest.raises(UserError, match="has no function 'missing'"):
        resolve_reward("my_rewards:missing")
    with pytest.raises(UserError, match="unknown --reward 'exact'"):
        resolve_reward("exact")
