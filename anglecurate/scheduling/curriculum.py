"""GAIN-RL's closed loop inside a trainer: epochs of dataset indices, moved by rewards.

The trainer adapters (``anglecurate.trl``, ``anglecurate.verl``) share this object. It is
built from a schedule folder (hyperparameters, seed, per-epoch size and the ranking) and
the uids of the trainer's own dataset, so a trainer that dropped or reordered rows (verl
filters over-long prompts) cannot shift the schedule: every draw goes through ``uid``.

Epoch ``e`` is a pure function of the seed and the feedback of epochs ``0..e-1``: the
sampler's state at the start of every drawn epoch is kept, so asking for an epoch again
(a trainer resuming from a checkpoint) gives the same examples, bit for bit. With
``feedback=False`` the centre moves as the schedule's open loop does, so the epochs equal
``schedule.parquet``'s when the dataset holds every ranked row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anglecurate.base.errors import UserError
from anglecurate.scheduling.epochs import load_schedule, open_loop_move
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams

log = logging.getLogger("anglecurate")


class Curriculum:
    """Draws epochs over the rows of a trainer's dataset; see the module docs."""

    def __init__(
        self,
        schedule: str | Path,
        dataset_uids: Sequence,
        reward_min: float = 0.0,
        reward_max: float = 1.0,
        feedback: bool = True,
    ):
        state, ranking = load_schedule(schedule)
        initial = state["initial"]
        self._setup(
            [str(u) for u in ranking.uids.to_list()],
            dataset_uids,
            per_epoch=initial["per_epoch"],
            params=SamplerParams(**initial["params"]),
            seed=initial["seed"],
            open_loop=None if feedback else state["open_loop"],
            reward_range=(reward_min, reward_max),
            source=f"the ranking at {ranking.path}; train on {Path(schedule) / 'rows.parquet'} "
            "(export trl or verl)",
        )
        self.batch_multiple = state.get("batch_multiple", 1)
        self.rank_layer = ranking.identity["ranking"].get("layer")

    @classmethod
    def from_order(
        cls,
        ranked_uids: Sequence,
        dataset_uids: Sequence,
        per_epoch: int,
        params: SamplerParams,
        seed: int = 0,
        open_loop: dict | None = None,
        reward_min: float = 0.0,
        reward_max: float = 1.0,
        rank_layer: int | None = None,
    ) -> Curriculum:
        """A curriculum over any order of uids (rank 0 first) without a schedule folder: the
        pilot's length and reverse arms walk the same window over other orders.
        ``open_loop``: None for the closed loop, else ``{"step": s, "assume_accuracy": None}``."""
        self = cls.__new__(cls)
        self._setup(
            [str(u) for u in ranked_uids],
            dataset_uids,
            per_epoch,
            params,
            seed,
            open_loop,
            (reward_min, reward_max),
            "the given order",
        )
        self.batch_multiple = 1
        self.rank_layer = rank_layer
        return self

    def _setup(self, ranked, dataset_uids, per_epoch, params, seed, open_loop, reward_range, source) -> None:
        reward_min, reward_max = reward_range
        if not reward_max > reward_min:
            raise UserError(f"reward_max ({reward_max}) must exceed reward_min ({reward_min})")
        index_of = {str(uid): i for i, uid in enumerate(dataset_uids)}
        if len(index_of) != len(dataset_uids):
            raise UserError("the training dataset repeats uids; pass the schedule's rows.parquet")
        present = [index_of[u] for u in ranked if u in index_of]
        if not present:
            raise UserError(f"the training dataset shares no uid with {source}, or name the uid column")
        if len(present) < len(ranked):
            log.warning(
                "%d of %d ranked rows are not in the training dataset (filtered by the trainer?); "
                "the schedule runs over the %d that are",
                len(ranked) - len(present),
                len(ranked),
                len(present),
            )
        self.indices = np.asarray(present, dtype=np.int64)  # dataset index at each kept rank
        self.per_epoch = per_epoch
        first = GaussianSampler(len(present), per_epoch, params, seed)
        self.open_loop = open_loop
        self.reward_min, self.reward_max = reward_min, reward_max
        self._starts = [first.state_dict()]  # sampler state at the start of each drawn epoch
        # per epoch: reward sum, reward count, angle sum, angle count
        self._feedback: list[list[float]] = [[0.0, 0.0, 0.0, 0.0]]
        self.current = 0

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Dataset indices of epoch ``epoch`` (int64 [per_epoch]), drawing it if it is new."""
        if epoch > len(self._starts):
            raise ValueError(f"epoch {epoch} requested before epoch {len(self._starts)} was drawn")
        if epoch == len(self._starts):
            sampler = GaussianSampler.from_state_dict(self._starts[-1])
            sampler.next_epoch()  # advance the generator past the previous epoch's draw
            self._move(sampler, epoch - 1)
            self._starts.append(sampler.state_dict())
            self._feedback.append([0.0, 0.0, 0.0, 0.0])
        self.current = epoch
        return self.indices[GaussianSampler.from_state_dict(self._starts[epoch]).next_epoch()]

    def _move(self, sampler: GaussianSampler, finished: int) -> None:
        if self.open_loop is not None:
            open_loop_move(sampler, self.open_loop)
            return
        accuracy, angle = self.accuracy(finished), self.angle(finished)
        if accuracy is None:
            log.warning("no rewards recorded in epoch %d; the centre stays at %.1f", finished, sampler.mu)
            return
        sampler.update(accuracy, angle or 0.0)
        log.info(
            "epoch %d accuracy %.3f angle %.4f: centre moves to rank %.1f",
            finished,
            accuracy,
            angle or 0.0,
            sampler.mu,
        )

    def record(self, rewards: Sequence[float | None]) -> None:
        """Add rewards of the current epoch (None = not scored); normalised to [0, 1]."""
        values = np.asarray([r for r in rewards if r is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        values = np.clip((values - self.reward_min) / (self.reward_max - self.reward_min), 0.0, 1.0)
        self._feedback[self.current][0] += float(values.sum())
        self._feedback[self.current][1] += values.size

    def record_angles(self, total: float, count: int) -> None:
        """Add the summed angle concentration of ``count`` training sequences of the current
        epoch (:class:`anglecurate.scheduling.train_angle.AngleMeter` measures them)."""
        self._feedback[self.current][2] += float(total)
        self._feedback[self.current][3] += int(count)

    def accuracy(self, epoch: int) -> float | None:
        """Epoch ``epoch``'s mean normalised reward; None before any was recorded."""
        total, count = self._feedback[epoch][:2]
        return total / count if count else None

    def angle(self, epoch: int) -> float | None:
        """Epoch ``epoch``'s mean training-sequence angle; None when none was measured (the
        update then feeds 0, as ``schedule update`` does without an angle column)."""
        total, count = self._feedback[epoch][2:]
        return total / count if count else None

    def centre(self, epoch: int) -> float:
        """The window centre (a rank) epoch ``epoch`` was drawn around."""
        return float(self._starts[epoch]["mu"])

    def feedback_totals(self, epoch: int) -> list[float]:
        """[reward sum, reward count, angle sum, angle count] of ``epoch``: what a trainer
        with several processes sums across them before the next epoch is drawn."""
        return list(self._feedback[epoch])

    def set_feedback_totals(self, epoch: int, totals: Sequence[float]) -> None:
        self._feedback[epoch] = [float(v) for v in totals]

    def state_dict(self) -> dict:
        return {"starts": self._starts, "feedback": self._feedback, "current": self.current}

    def load_state_dict(self, state: dict) -> None:
        if state["starts"][0] != self._starts[0]:
            raise UserError("this checkpoint's curriculum was drawn from another schedule or dataset")
        self._starts = state["starts"]
        # checkpoints before the angle feedback hold [reward sum, count] only
        self._feedback = [[*map(float, f), 0.0, 0.0][:4] for f in state["feedback"]]
        self.current = state["current"]
