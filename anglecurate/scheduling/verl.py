"""verl adapter: GAIN-RL's sampler for ``data.sampler.class_path`` (verl 0.5 to 0.7; for verl 0.7
to 0.9 see :mod:`anglecurate.scheduling.verl_dataset`).

verl builds it through ``create_rl_sampler`` from the ``data`` config::

    data.train_files=S/rows.parquet data.dataloader_num_workers=0
    data.sampler.class_path=pkg://anglecurate.verl data.sampler.class_name=GainRLSampler
    +data.sampler.schedule=S  +data.sampler.reward_max=1.0

Keys under ``data.sampler`` (``+`` adds them to verl's config): ``schedule`` (required, a
folder from ``anglecurate schedule``), ``uid_field`` (the dataset column holding the
ranking's uids, default ``uid``), ``reward_min``/``reward_max`` (the reward that means
wrong/right, default 0/1), ``feedback`` (default true; false replays the schedule's open
loop). Rows are found by uid in verl's own dataframe, after its over-long prompt filter,
so filtering cannot shift the schedule. Each verl epoch is one GAIN-RL epoch of
``per_epoch`` rows (a multiple of ``data.train_batch_size``, checked); ``update(batch)``
adds the batch's sequence rewards to the epoch's accuracy, and the next epoch's centre
moves by the GAIN-RL rule. ``state_dict`` holds the curriculum and the position in the
epoch, which verl's ``StatefulDataLoader`` saves in every checkpoint and restores on resume.
"""

from __future__ import annotations

try:
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler
except ImportError as exc:  # verl 0.8 removed data.sampler; before 0.5 it did not exist
    raise ImportError(
        "anglecurate.verl.GainRLSampler needs verl 0.5 to 0.7 (the versions with data.sampler.class_path); "
        "on verl 0.8 and later use data.custom_cls.name=GainRLDataset (docs/schedule.md)"
    ) from exc

from anglecurate.base.errors import UserError
from anglecurate.scheduling.curriculum import Curriculum


class GainRLSampler(AbstractCurriculumSampler):
    """GAIN-RL's Gaussian sampler over verl's dataset; configured by ``data.sampler``."""

    def __init__(self, data_source, data_config):
        cfg = data_config.sampler
        if not cfg.get("schedule"):
            raise UserError("set +data.sampler.schedule to a folder made by `anglecurate schedule`")
        uid_field = cfg.get("uid_field", "uid")
        frame = getattr(data_source, "dataframe", None)
        if frame is None or uid_field not in frame.column_names:
            columns = getattr(frame, "column_names", None)
            raise UserError(
                f"verl's dataset has no {uid_field!r} column (it has {columns}); train on the "
                "schedule's rows.parquet or set +data.sampler.uid_field"
            )
        self.curriculum = Curriculum(
            cfg.schedule,
            frame[uid_field],
            reward_min=float(cfg.get("reward_min", 0.0)),
            reward_max=float(cfg.get("reward_max", 1.0)),
            feedback=bool(cfg.get("feedback", True)),
        )
        batch = int(data_config.get("train_batch_size", 1))
        if self.curriculum.per_epoch % batch:
            raise UserError(
                f"the schedule's per-epoch size {self.curriculum.per_epoch} is not a multiple of "
                f"data.train_batch_size={batch}; redraw it with --batch-multiple {batch}"
            )
        self.epoch = -1  # the epoch being fed; -1 before the first
        self.position = 0  # rows of it already yielded

    def __len__(self) -> int:
        return self.curriculum.per_epoch

    def __iter__(self):
        if self.epoch < 0 or self.position >= self.curriculum.per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        indices = self.curriculum.epoch_indices(self.epoch)
        while self.position < len(indices):
            index = int(indices[self.position])
            self.position += 1  # counted as it is handed out, so a checkpoint resumes after it
            yield index

    def update(self, batch) -> None:
        """Record the sequence rewards of a trained batch (verl calls this after each step)."""
        tensors = batch.batch
        key = next((k for k in ("token_level_scores", "token_level_rewards") if k in tensors.keys()), None)  # noqa: SIM118
        if key is None:
            raise UserError("verl's batch has no token_level_scores; cannot measure the epoch's accuracy")
        self.curriculum.record(tensors[key].sum(-1).float().tolist())

    def state_dict(self) -> dict:
        return {"curriculum": self.curriculum.state_dict(), "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.curriculum.load_state_dict(state["curriculum"])
        self.epoch, self.position = state["epoch"], state["position"]
