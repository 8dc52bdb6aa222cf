"""The in-trainer curriculum: open loop equals the schedule, closed loop follows the GAIN-RL
rule, epochs replay bit for bit, and rows are found by uid whatever the trainer dropped."""

from __future__ import annotations

import math

import polars as pl
import pytest

from anglecurate.base.errors import UserError
from anglecurate.scheduling.curriculum import Curriculum
from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams

SAMPLER = {"sigma": 4.0, "n": 12.0, "adj_max": 100.0}


@pytest.fixture
def schedule(ranking, tmp_path):
    cfg = ScheduleConfig(str(ranking), str(tmp_path / "s"), per_epoch=8, epochs=3, seed=9, sampler=SAMPLER)
    create_schedule(cfg)
    return tmp_path / "s"


def ranked_uids(schedule_dir) -> list[str]:
    from anglecurate.scheduling.epochs import load_schedule

    return load_schedule(schedule_dir)[1].uids.to_list()


def test_open_loop_replays_the_schedule_through_any_row_order(schedule):
    uids = ranked_uids(schedule)
    shuffled = uids[::-1][1::2] + uids[::-1][0::2]  # the trainer's dataset has its own order
    curriculum = Curriculum(schedule, shuffled, feedback=False)
    planned = pl.read_parquet(schedule / "schedule.parquet")
    for epoch in range(3):
        got = [shuffled[i] for i in curriculum.epoch_indices(epoch)]
        assert got == planned.filter(pl.col("epoch") == epoch)["uid"].to_list()


def test_closed_loop_moves_by_the_rewards_and_replays_bit_for_bit(schedule):
    uids = ranked_uids(schedule)
    curriculum = Curriculum(schedule, uids, reward_min=0.0, reward_max=2.0)
    reference = GaussianSampler(40, 8, SamplerParams.for_size(40, **SAMPLER), seed=9)
    assert curriculum.epoch_indices(0).tolist() == reference.next_epoch().tolist()
    curriculum.record([2.0, 0.0, 2.0, None, 2.0, 7.0])  # None = unscored; 7 clips to 1
    assert curriculum.accuracy(0) == pytest.approx(0.8)
    epoch1 = curriculum.epoch_indices(1).tolist()
    reference.update(0.8)
    assert reference.mu == pytest.approx(12 * math.tanh(2 * 0.3))
    assert epoch1 == reference.next_epoch().tolist()
    # a restarted trainer asks for the same epochs again and gets them
    state = curriculum.state_dict()
    again = Curriculum(schedule, uids, reward_max=2.0)
    again.load_state_dict(state)
    assert again.epoch_indices(1).tolist() == epoch1
    assert again.epoch_indices(0).tolist() == curriculum.epoch_indices(0).tolist()
    curriculum.record([0.0] * 4)
    again.record([0.0] * 4)
    assert again.epoch_indices(2).tolist() == curriculum.epoch_indices(2).tolist()


def test_rows_missing_from_the_trainer_are_skipped_not_shifted(schedule):
    uids = ranked_uids(schedule)
    kept = [u for i, u in enumerate(uids) if i % 4]  # the trainer filtered a quarter
    curriculum = Curriculum(schedule, kept)
    assert curriculum.indices.size == len(kept)
    for epoch in range(3):
        chosen = [kept[i] for i in curriculum.epoch_indices(epoch)]
        assert len(set(chosen)) == 8
        ranks = [uids.index(u) for u in chosen]
        assert ranks == sorted(ranks)  # still fed in rank order
        curriculum.record([1.0])


def test_curriculum_errors(schedule):
    with pytest.raises(UserError, match="shares no uid"):
        Curriculum(schedule, ["x", "y"])
    with pytest.raises(UserError, match="repeats uids"):
        Curriculum(schedule, ["q1", "q1"])
    with pytest.raises(UserError, match="per-epoch size 8"):
        Curriculum(schedule, ranked_uids(schedule)[:5])
    with pytest.raises(UserError, match="reward_max"):
        Curriculum(schedule, ranked_uids(schedule), reward_min=1.0, reward_max=1.0)
    other = Curriculum(schedule, ranked_uids(schedule)[:30])
    with pytest.raises(UserError, match="another schedule"):
        Curriculum(schedule, ranked_uids(schedule)).load_state_dict(other.state_dict())


def test_angle_feedback_moves_the_centre_and_survives_a_checkpoint(schedule):
    uids = ranked_uids(schedule)
    curriculum = Curriculum(schedule, uids)
    curriculum.epoch_indices(0)
    curriculum.record([0.0] * 8)  # accuracy 0: alone it would hold the centre at 0 (adj_min 0)
    curriculum.record_angles(total=4.8, count=8)
    assert curriculum.angle(0) == pytest.approx(0.6)
    curriculum.epoch_indices(1)
    expected = min(max(12 * math.tanh(2 * -0.5) + 12 * math.tanh(2 * 0.6), 0.0), 100.0)
    assert curriculum.centre(1) == pytest.approx(expected) and expected > 0
    again = Curriculum(schedule, uids)
    again.load_state_dict(curriculum.state_dict())
    assert again.angle(0) == pytest.approx(0.6) and again.centre(1) == curriculum.centre(1)


def test_checkpoints_from_before_the_angle_feedback_still_load(schedule):
    uids = ranked_uids(schedule)
    curriculum = Curriculum(schedule, uids)
    curriculum.epoch_indices(0)
    curriculum.record([1.0, 0.0])
    state = curriculum.state_dict()
    state["feedback"] = [f[:2] for f in state["feedback"]]  # [reward sum, count] only
    again = Curriculum(schedule, uids)
    again.load_state_dict(state)
    assert again.accuracy(0) == 0.5 and again.angle(0) is None
