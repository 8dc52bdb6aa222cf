"""The arms' orders: length shortest first, reverse the ranking upside down, and the open
loop walking the whole order; the generated arithmetic task is the same on every machine."""

from __future__ import annotations

import polars as pl

from anglecurate.piloting.arms import Order, curriculum_for, length_order
from anglecurate.rewards.registry import number_reward
from anglecurate.sources.arithmetic import generate


class WordTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_length_order_is_shortest_first_with_ties_in_input_order():
    train = pl.DataFrame({"uid": ["a", "b", "c", "d"], "q": ["one two three", "one", "x y", "p q"]})
    assert length_order(train, "q", WordTokenizer()) == ["b", "c", "d", "a"]


def test_open_loop_walks_from_the_first_rank_to_the_last():
    uids = [f"u{i}" for i in range(40)]
    curriculum = curriculum_for(Order(uids, closed_loop=False, rank_layer=None), uids, 4, epochs=5, seed=0)
    centres = []
    for epoch in range(5):
        curriculum.epoch_indices(epoch)
        centres.append(curriculum.centre(epoch))
    assert centres == [0.0, 9.75, 19.5, 29.25, 39.0]


def test_closed_loop_curriculum_moves_with_feedback():
    uids = [f"u{i}" for i in range(40)]
    curriculum = curriculum_for(Order(uids[::-1], closed_loop=True, rank_layer=3), uids, 4, epochs=5, seed=0)
    assert curriculum.rank_layer == 3
    first = curriculum.epoch_indices(0)
    assert first.max() >= 30  # reversed: rank 0 is the last row
    curriculum.record([1.0] * 8)
    curriculum.record_angles(2.0, 4)
    curriculum.epoch_indices(1)
    assert curriculum.centre(1) > 0 and curriculum.angle(0) == 0.5 and curriculum.accuracy(0) == 1.0


def test_arithmetic_task_is_seeded_graded_and_answerable():
    rows = generate(300, seed=0)
    # pinned: the published pilot ran on these rows; a change to the generator changes them
    assert [r["problem"].split("?")[0] for r in rows[:3]] == [
        "What is 67 + 56 - 3",
        "What is 99 - 90",
        "What is 17 + 35 - 4",
    ]
    assert rows[:5] == generate(5, seed=0)  # row i depends only on (seed, i)
    assert generate(5, seed=1) != rows[:5]
    assert {r["level"] for r in rows} == set(range(1, 7))
    assert len({r["uid"] for r in rows}) == 300
    for row in rows:
        expression = row["problem"].removeprefix("What is ").split("?")[0]
        assert str(eval(expression)) == row["answer"]  # noqa: S307 - digits and + - * only
    assert number_reward([r["answer"] for r in rows], [r["answer"] for r in rows]) == [1.0] * 300
