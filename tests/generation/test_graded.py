"""The reward applied in one place: TRL's keyword lists, clipped rewards, pass rate per
prompt, reward variance per group."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from anglecurate.base.errors import UserError
from anglecurate.generation.graded import grade
from anglecurate.generation.request import GenerationRequest, GenerationResult
from anglecurate.rewards.registry import number_reward


def _result(completions: list[list[str]], chat: bool = False) -> GenerationResult:
    """A result as an engine would return it, for prompts q0, q1, ... with k samples each."""
    n, k = len(completions), len(completions[0])
    prompts = [[{"role": "user", "content": f"q{i}"}] if chat else f"q{i}" for i in range(n)]
    request = GenerationRequest(
        prompts=tuple(prompts),
        texts=tuple(f"q{i}" for i in range(n)),
        chat=chat,
        max_new_tokens=4,
        k=k,
        temperature=1.0 if k > 1 else 0.0,
    )
    ids = [[[7] * len(c) for c in row] for row in completions]
    return GenerationResult(request, ids, completions, [1] * n, "hf")


def test_pass_rate_and_variance_from_a_deterministic_reward():
    result = _result([["4", "5", "4", "4"], ["9", "9", "9", "9"], ["x", "1", "2", "3"]])
    graded = grade(result, number_reward, answers=["4", "9", "7"])
    assert graded.rewards == [[1.0, 0.0, 1.0, 1.0], [1.0] * 4, [0.0] * 4]
    assert graded.pass_rate == [0.75, 1.0, 0.0]
    assert graded.has_variance == [True, False, False]  # only a mixed group teaches GRPO anything
    assert graded.accuracy == pytest.approx(7 / 12)


def test_the_reward_gets_trls_keyword_lists_prompt_by_prompt():
    seen = {}

    def reward(prompts, completions, answer, level, **kwargs):
        seen.update(prompts=prompts, completions=completions, answer=answer, level=level, extra=kwargs)
        return [1.0] * len(completions)

    result = _result([["a", "b"], ["c", "d"]], chat=True)
    grade(result, reward, answers=["A", "B"], level=[1, 2])
    assert (
        seen["prompts"]
        == [[{"role": "user", "content": "q0"}]] * 2 + [[{"role": "user", "content": "q1"}]] * 2
    )
    assert seen["completions"] == [[{"role": "assistant", "content": c}] for c in "abcd"]
    assert seen["answer"] == ["A", "A", "B", "B"]
    assert seen["level"] == [1, 1, 2, 2]
    assert seen["extra"] == {}


def test_rewards_are_clipped_and_variance_reads_the_raw_values():
    result = _result([["a", "b"], ["c", "d"], ["e", "f"]])
    raw = [2.0, 1.0, None, float("nan"), -1.0, 0.5]
    graded = grade(result, lambda completions, **_: raw, answers=["", "", ""])
    assert graded.rewards == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.5]]
    assert graded.pass_rate == [1.0, 0.0, 0.25]
    # 2.0 and 1.0 clip alike but give GRPO an advantage; None and NaN count 0, as in TRL.
    assert graded.has_variance == [True, False, True]


def test_a_group_of_one_has_no_variance():
    graded = grade(_result([["4"], ["5"]]), number_reward, answers=["4", "4"])
    assert graded.has_variance == [False, False]
    assert graded.pass_rate == [1.0, 0.0]


def test_a_reward_that_miscounts_is_a_one_line_user_error():
    def short(completions, **_):
        return [1.0]

    with pytest.raises(UserError, match="reward short returned 1 values for 4 completions") as err:
        grade(_result([["a", "b"], ["c", "d"]]), short, answers=["", ""])
    assert "\n" not in str(err.value)


def test_the_api_docs_example_runs_as_written(policy, tokenizer, capsys):
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    (code,) = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    exec(compile(code, "docs/api.md", "exec"), {"model": policy, "tokenizer": tokenizer})
    pass_rate, variance, tokens = re.fullmatch(r"\[(.*)\] \[(.*)\] (\d+)\n", capsys.readouterr().out).groups()
    assert 0.0 <= float(pass_rate) <= 1.0 and variance in ("True", "False")
    assert int(tokens) == 8 * 16  # 8 samples that never stop: a random model writes no stop token
