"""verl adapter for verl 0.7 to 0.9: GAIN-RL's epochs as a custom dataset (``data.custom_cls``).

verl 0.8 removed ``data.sampler.class_path`` (the path :mod:`anglecurate.scheduling.verl` uses):
its ``create_rl_sampler`` builds only a random or a sequential sampler. What every release
from 0.7 to 0.9 still offers is a dataset class of one's own, ``data.custom_cls.{path,name}``,
which the PPO trainer also calls with ``on_batch_end(batch=...)`` after every step::

    data.train_files=S/rows.parquet data.shuffle=False data.dataloader_num_workers=0
    data.custom_cls.path=pkg://anglecurate.verl data.custom_cls.name=GainRLDataset
    +data.custom_cls.schedule=S +data.custom_cls.epochs=10 trainer.total_epochs=1

With ``data.shuffle=False`` verl reads the dataset in index order, so the dataset decides the
order by what it puts at each index. It holds every GAIN-RL epoch in one pass: item ``i`` is
row ``i mod K`` of GAIN-RL epoch ``i div K`` (K = the schedule's per-epoch size), and verl
runs that pass once (``trainer.total_epochs=1``). An index names its epoch and position, so
nothing about where verl is in the run has to be remembered; the only state is the
curriculum's feedback (:class:`~anglecurate.scheduling.curriculum.Curriculum`), drawn epoch by
epoch as verl reaches it. Rows are found by uid in verl's own dataframe after its over-long
prompt filter, as the 0.7 sampler does.

Resume. ``state_dict`` / ``load_state_dict`` make the dataset ``Stateful``, so verl's
``StatefulDataLoader`` (with ``data.dataloader_num_workers=0``) saves the curriculum in every
checkpoint's ``data.pt`` and restores it on resume. verl writes that checkpoint *before* it
calls ``on_batch_end`` for the step, so the rewards of the step a checkpoint ends with are
not in it. The dataset writes them next to it, ``global_step_S/anglecurate_feedback.json``,
tagged with a fingerprint of the state in ``data.pt``, and a resume from that checkpoint adds
them back: the resumed run draws the same epochs as one that was never stopped.

The validation set goes through the same class (verl builds both from ``data``); a dataset
whose files are not ``data.train_files`` behaves exactly as verl's ``RLHFDataset``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

try:
    from verl.utils.dataset.rl_dataset import RLHFDataset
except ImportError as exc:  # verl is not a dependency of anglecurate: say which
    raise ImportError("anglecurate.verl.GainRLDataset needs verl 0.7 to 0.9 (pip install verl)") from exc

from anglecurate.base.errors import UserError
from anglecurate.scheduling.curriculum import Curriculum
from anglecurate.scheduling.epochs import SCHEDULE_FILE
from anglecurate.storage.atomic import atomic_write_json

log = logging.getLogger("anglecurate")

RECEIPT_FILE = "anglecurate_feedback.json"
OPTIONS = ("schedule", "epochs", "uid_field", "reward_min", "reward_max", "feedback", "angle_key")


class GainRLDataset(RLHFDataset):
    """verl's ``RLHFDataset`` whose index order is GAIN-RL's epochs; see the module docs.

    Options under ``data.custom_cls`` (``+`` adds them to verl's config): ``schedule``
    (required, a folder from ``anglecurate schedule``), ``epochs`` (GAIN-RL epochs in the run;
    default: the epochs drawn in the schedule), ``uid_field`` (default ``uid``),
    ``reward_min``/``reward_max`` (the sequence reward that means wrong/right, default 0/1),
    ``feedback`` (default true; false replays the schedule's open loop), ``angle_key`` (a
    per-sequence angle in the batch, default ``gainrl_angle``; 0 when absent).
    """

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples: int = -1):
        super().__init__(
            data_files=data_files,
            tokenizer=tokenizer,
            config=config,
            processor=processor,
            max_samples=max_samples,
        )
        self.curriculum: Curriculum | None = None
        if _file_list(data_files) != _file_list(config.get("train_files")):
            return  # the validation set: served exactly as verl serves it
        if _file_list(config.get("val_files")) == _file_list(data_files):
            raise UserError(
                "data.val_files is data.train_files, so the validation set would be trained in GAIN-RL "
                "order too; point data.val_files at a held-out file (or a copy)"
            )
        self._setup(config, config.get("custom_cls") or {})

    def _setup(self, config, cfg) -> None:
        unknown = sorted(set(cfg) - {"path", "name", *OPTIONS})
        if unknown:
            raise UserError(f"unknown data.custom_cls.{unknown[0]}; GainRLDataset takes {', '.join(OPTIONS)}")
        if not cfg.get("schedule"):
            raise UserError("set +data.custom_cls.schedule to a folder made by `anglecurate schedule`")
        if config.get("shuffle", True):
            raise UserError("set data.shuffle=False: verl's random sampler would undo the GAIN-RL order")
        self.feedback = bool(cfg.get("feedback", True))
        if self.feedback and int(config.get("dataloader_num_workers", 8)) != 0:
            raise UserError(
                "set data.dataloader_num_workers=0: the closed loop's state lives in the dataset, and "
                "verl's worker processes would each train on a copy that never sees the rewards"
            )
        uid_field = cfg.get("uid_field", "uid")
        if uid_field not in self.dataframe.column_names:
            raise UserError(
                f"verl's dataset has no {uid_field!r} column (it has {self.dataframe.column_names}); "
                "train on the schedule's rows.parquet or set +data.custom_cls.uid_field"
            )
        self.curriculum = Curriculum(
            cfg.schedule,
            self.dataframe[uid_field],
            reward_min=float(cfg.get("reward_min", 0.0)),
            reward_max=float(cfg.get("reward_max", 1.0)),
            feedback=self.feedback,
        )
        self.per_epoch = self.curriculum.per_epoch
        self.epochs = int(cfg.get("epochs") or _drawn_epochs(Path(cfg.schedule)))
        if self.epochs < 1:
            raise UserError(f"data.custom_cls.epochs must be at least 1, got {self.epochs}")
        self.angle_key = cfg.get("angle_key", "gainrl_angle")
        # verl's dataloader batch: every step fetches one (the PPO trainers' gen_batch_size
        # or train_batch_size), so a step never spans two GAIN-RL epochs when K is a multiple
        self.batch_size = int(config.get("gen_batch_size") or config.get("train_batch_size", 1))
        if self.per_epoch % self.batch_size:
            raise UserError(
                f"the schedule's per-epoch size {self.per_epoch} is not a multiple of verl's batch of "
                f"{self.batch_size} prompts; redraw it with --batch-multiple {self.batch_size}"
            )
        self._check_trainer(config)
        self.checkpoint_dir = _trainer_setting(config, "default_local_dir")
        self.resume_path = _trainer_setting(config, "resume_from_path")
        self._served = 0  # items handed out: the next index verl asks for, as a count
        self._batches_fed = 0  # on_batch_end calls, over the whole run
        self._batch_started = 0.0  # wall time the current batch was first fetched
        self._cached: tuple[int, np.ndarray] | None = None

    def _check_trainer(self, config) -> None:
        """Refuse, before anything is trained, the trainer settings that would break the run."""
        if self.feedback and _trainer_setting(config, "use_v1") is True:
            raise UserError(
                "verl's V1 trainer (trainer.use_v1=True, verl 0.9's default) never calls on_batch_end, so "
                "no reward would reach the curriculum; set trainer.use_v1=False for the closed loop, or "
                "+data.custom_cls.feedback=false for the open loop"
            )
        total_epochs = _trainer_setting(config, "total_epochs")
        if total_epochs not in (None, 1) and _trainer_setting(config, "total_training_steps") is None:
            raise UserError(
                f"set trainer.total_epochs=1 (it is {total_epochs}): one pass over GainRLDataset is the "
                f"whole run of {self.epochs} GAIN-RL epochs; set +data.custom_cls.epochs for more"
            )

    def __len__(self) -> int:
        if self.curriculum is None:
            return super().__len__()
        return self.per_epoch * self.epochs

    def __getitem__(self, item):
        if self.curriculum is None:
            return super().__getitem__(item)
        item = int(item)
        if not 0 <= item < len(self):
            raise IndexError(f"GainRLDataset index {item} out of range [0, {len(self)})")
        if item == 0 and self._served == len(self):
            raise UserError(
                "verl started a second pass over GainRLDataset; set trainer.total_epochs=1 (one pass holds "
                "every GAIN-RL epoch) and +data.custom_cls.epochs to the number of epochs wanted"
            )
        epoch, position = divmod(item, self.per_epoch)
        if item % self.batch_size == 0:
            self._batch_started = time.time()
        row = super().__getitem__(int(self._epoch_indices(epoch)[position]))
        self._served = max(self._served, item + 1)
        return row

    def _epoch_indices(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            if self.feedback and epoch > 0 and self._batches_fed == 0:
                raise UserError(
                    "no rewards reached the curriculum in GAIN-RL epoch 0: this trainer never calls "
                    "on_batch_end (verl 0.9's V1 trainer does not); set trainer.use_v1=False for the "
                    "closed loop, or +data.custom_cls.feedback=false for the open loop"
                )
            self._cached = (epoch, self.curriculum.epoch_indices(epoch))
        return self._cached[1]

    def on_batch_end(self, batch) -> None:
        """Record a trained batch's sequence rewards (and angles, when the batch has them) as
        its epoch's feedback; verl's PPO trainer calls this after every step."""
        if self.curriculum is None or not self.feedback:
            return
        fingerprint = _fingerprint(self.state_dict())  # the state verl saved in this step's data.pt
        epoch = self.curriculum.current
        before = self.curriculum.feedback_totals(epoch)
        rewards, angles = _sequence_rewards(batch), _sequence_angles(batch, self.angle_key)
        self.curriculum.record(rewards)
        if angles is not None:
            finite = angles[np.isfinite(angles)]
            self.curriculum.record_angles(float(finite.sum()), int(finite.size))
        self._batches_fed += 1
        delta = [a - b for a, b in zip(self.curriculum.feedback_totals(epoch), before, strict=True)]
        self._write_receipt({"fingerprint": fingerprint, "epoch": epoch, "feedback": delta})

    def _step_folders(self, step: int) -> list[Path]:
        """Where verl keeps the checkpoint of ``step``: ``trainer.default_local_dir`` (made
        absolute as verl does) and, on ``resume_mode=resume_path``, ``trainer.resume_from_path``."""
        folders = []
        if self.resume_path and Path(str(self.resume_path)).name == f"global_step_{step}":
            folders.append(Path(os.path.abspath(str(self.resume_path))))
        if self.checkpoint_dir:
            folders.append(Path(os.path.abspath(str(self.checkpoint_dir))) / f"global_step_{step}")
        return folders

    def _write_receipt(self, receipt: dict) -> None:
        """Next to a checkpoint verl wrote during this step (its data.pt is newer than the
        batch), the step's feedback that data.pt lacks."""
        if not self.checkpoint_dir:
            return
        folder = (
            Path(os.path.abspath(str(self.checkpoint_dir))) / f"global_step_{self._served // self.batch_size}"
        )
        data = folder / "data.pt"
        # 1 s of slack for file systems that keep mtimes in whole seconds
        if data.exists() and data.stat().st_mtime >= self._batch_started - 1.0:
            atomic_write_json(receipt, folder / RECEIPT_FILE)

    def _apply_receipt(self, state: dict) -> None:
        """Add back the feedback of the step the restored checkpoint ended with."""
        if not self.feedback or self._served <= self._batches_fed * self.batch_size:
            return  # every served batch's feedback is in the state
        step = self._served // self.batch_size
        fingerprint = _fingerprint(state)
        for folder in self._step_folders(step):
            path = folder / RECEIPT_FILE
            receipt = json.loads(path.read_text()) if path.exists() else {}
            if receipt.get("fingerprint") == fingerprint:
                totals = self.curriculum.feedback_totals(receipt["epoch"])
                added = [a + b for a, b in zip(totals, receipt["feedback"], strict=True)]
                self.curriculum.set_feedback_totals(receipt["epoch"], added)
                self._batches_fed += 1
                return
        log.warning(
            "the rewards of step %d (trained just before its checkpoint was written) were not found next "
            "to it (%s); GAIN-RL epoch %d's accuracy is measured without them",
            step,
            RECEIPT_FILE,
            self.curriculum.current,
        )

    def state_dict(self) -> dict:
        if self.curriculum is None:
            return {}
        return {"curriculum": self.curriculum.state_dict(), "served": self._served, "fed": self._batches_fed}

    def load_state_dict(self, state: dict) -> None:
        if self.curriculum is None or not state:
            return
        self.curriculum.load_state_dict(json.loads(json.dumps(state["curriculum"])))
        self._served, self._batches_fed = int(state["served"]), int(state["fed"])
        self._cached = None
        self._apply_receipt(state)


def _file_list(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str | os.PathLike):
        return [str(files)]
    return [str(f) for f in files]


def _trainer_setting(config, key: str):
    """``trainer.KEY`` of the whole verl config ``config`` (the ``data`` node) belongs to; None
    when it has no such key or ``config`` stands alone (a data node without a parent, or a
    plain mapping). Any other failure (an interpolation that does not resolve, say) is the
    config's error and is raised: it must not switch the trainer checks off."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not isinstance(config, DictConfig):  # a plain dict has no parent: nothing to check against
        return None
    try:
        return OmegaConf.select(config, f"..trainer.{key}", default=None)
    except (ConfigKeyError, ConfigAttributeError):  # a data config without a parent
        return None


def _drawn_epochs(schedule: Path) -> int:
    path = schedule / SCHEDULE_FILE
    if not path.exists():
        raise UserError(f"{schedule} holds no schedule; create one with `anglecurate schedule`")
    return int(pl.read_parquet(path, columns=["epoch"])["epoch"].max()) + 1


def _fingerprint(state: dict) -> str:
    text = json.dumps(state, sort_keys=True, default=float)
    return hashlib.sha256(text.encode()).hexdigest()


def _sequence_rewards(batch) -> list[float]:
    tensors = batch.batch
    key = next((k for k in ("token_level_scores", "token_level_rewards") if k in tensors.keys()), None)  # noqa: SIM118
    if key is None:
        raise UserError("verl's batch has no token_level_scores; cannot measure the epoch's accuracy")
    return tensors[key].sum(-1).float().tolist()


def _sequence_angles(batch, key: str) -> np.ndarray | None:
    """Per-sequence angles a worker or reward extension put in the batch under ``key``: verl's
    driver never sees hidden states, so without one the update's angle term is 0."""
    if key in batch.non_tensor_batch:
        values = batch.non_tensor_batch[key]
    elif batch.batch is not None and key in batch.batch.keys():  # noqa: SIM118
        values = batch.batch[key].float().cpu().numpy()
    else:
        return None
    return np.asarray(values, dtype=np.float64).reshape(-1)
