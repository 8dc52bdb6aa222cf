"""TRL adapter: GAIN-RL's closed loop inside an unmodified ``trl.GRPOTrainer``.

Open loop needs no code: train on ``S/trl.parquet`` (``--export trl``) with
``GRPOConfig(shuffle_dataset=False, num_train_epochs=1)``. For the closed loop::

    curriculum = Curriculum("S", dataset["uid"], reward_max=1.0)
    trainer = GainRLGRPOTrainer(
        model=..., args=GRPOConfig(num_train_epochs=E, ...), train_dataset=dataset,  # S/rows.parquet
        reward_funcs=[track(curriculum, accuracy_reward), format_reward], curriculum=curriculum,
    )

``GainRLGRPOTrainer`` overrides ``_get_train_sampler`` (GRPO's ``RepeatSampler`` grouping,
over the curriculum's epoch instead of a permutation), ``compute_loss`` (to measure the
training-time angle during the loss forward), ``train`` (to hold the angle hooks for the
run, removed when it ends) and the two checkpoint hooks TRL itself uses for extra state.
Each trainer epoch is one GAIN-RL epoch: the trainer's ``set_epoch`` names it, so a resumed
run replays the same examples. ``track`` wraps the reward function that measures
correctness; its rewards are the epoch's accuracy. The angle is measured at the ranking's
layer (``angle_layer`` overrides it; ``measure_angle=False`` feeds 0, the open formula's
accuracy term alone); see :mod:`anglecurate.scheduling.train_angle`.
"""

from __future__ import annotations

import functools
import json
import os

import torch
from torch.utils.data import Sampler

try:
    from trl import GRPOTrainer
except ImportError as exc:  # an optional extra: say which
    raise ImportError("anglecurate.trl needs TRL: pip install 'anglecurate[trl]'") from exc

from anglecurate.base.errors import UserError
from anglecurate.scheduling.curriculum import Curriculum
from anglecurate.scheduling.train_angle import AngleMeter

STATE_FILE = "anglecurate_curriculum.json"


class EpochRepeatSampler(Sampler[int]):
    """GRPO's ``RepeatSampler`` over a curriculum epoch: chunks of ``batch_size`` prompts,
    each chunk ``repeat_count`` times, each prompt ``mini_repeat_count`` times in a row."""

    def __init__(self, curriculum: Curriculum, mini_repeat_count: int, batch_size: int, repeat_count: int):
        if curriculum.per_epoch % batch_size:
            raise UserError(
                f"the schedule's per-epoch size {curriculum.per_epoch} is not a multiple of the {batch_size} "
                f"prompts GRPO draws per generation; redraw it with --batch-multiple {batch_size}"
            )
        self.curriculum = curriculum
        self.mini_repeat_count = mini_repeat_count
        self.batch_size = batch_size
        self.repeat_count = repeat_count
        self.epoch = 0  # the epoch the next pass yields

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch, also the first one after a resume."""
        self.epoch = epoch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1  # without set_epoch: consecutive passes
        indices = self.curriculum.epoch_indices(epoch).tolist()
        for start in range(0, len(indices), self.batch_size):
            chunk = indices[start : start + self.batch_size]
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        return self.curriculum.per_epoch * self.mini_repeat_count * self.repeat_count


def track(curriculum: Curriculum, reward_func):
    """``reward_func``, recording its rewards as the curriculum's accuracy feedback."""

    @functools.wraps(reward_func)  # TRL names the reward's logs after __name__
    def tracked(*args, **kwargs):
        rewards = reward_func(*args, **kwargs)
        curriculum.record(rewards)
        return rewards

    return tracked


class GainRLGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose training order comes from a GAIN-RL ``Curriculum``, fed back with
    the epoch's accuracy and training-time angle (see the module docs)."""

    def __init__(
        self,
        *args,
        curriculum: Curriculum,
        measure_angle: bool = True,
        angle_layer: int | None = None,
        **kwargs,
    ):
        self.curriculum = curriculum
        super().__init__(*args, **kwargs)
        if self.train_dataset is not None and len(self.train_dataset) <= int(curriculum.indices.max()):
            raise UserError("the curriculum was built for a larger dataset than train_dataset")
        layer = angle_layer if angle_layer is not None else curriculum.rank_layer
        self.angle_meter = AngleMeter(-1 if layer is None else layer) if measure_angle else None
        self._synced = (0, [0.0, 0.0, 0.0, 0.0])  # (epoch, feedback totals all processes agree on)

    def train(self, *args, **kwargs):
        if self.angle_meter is None:
            return super().train(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        with self.angle_meter.attached(model, _feed_forward_block(model, self.angle_meter.layer)):
            return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.angle_meter is None or not model.training:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        else:
            with self.angle_meter.measuring(inputs.get("completion_ids")):
                loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self.curriculum.record_angles(*self.angle_meter.take())
        if self.accelerator.num_processes > 1:
            self._sync_feedback()
        return loss

    def _sync_feedback(self) -> None:
        """Sum what each process recorded since the last sync, so every process draws the
        next epoch from the same totals (all processes call this in lockstep)."""
        epoch = self.curriculum.current
        base = self._synced[1] if self._synced[0] == epoch else [0.0, 0.0, 0.0, 0.0]
        local = self.curriculum.feedback_totals(epoch)
        delta = torch.tensor([a - b for a, b in zip(local, base, strict=True)], dtype=torch.float64)
        delta = self.accelerator.reduce(delta.to(self.accelerator.device), reduction="sum").cpu()
        totals = [b + d for b, d in zip(base, delta.tolist(), strict=True)]
        self.curriculum.set_feedback_totals(epoch, totals)
        self._synced = (epoch, totals)

    def _get_train_sampler(self, dataset=None) -> Sampler:
        # The same grouping arguments as GRPOTrainer's own RepeatSampler.
        return EpochRepeatSampler(
            self.curriculum,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
        )

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(self.curriculum.state_dict(), f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, STATE_FILE) if checkpoint else None
        if path and os.path.exists(path):
            with open(path) as f:
                self.curriculum.load_state_dict(json.load(f))
            self._synced = (self.curriculum.current, self.curriculum.feedback_totals(self.curriculum.current))


def _feed_forward_block(model, layer: int):
    """The feed-forward block of decoder layer ``layer`` (negative: from the end) of a policy,
    found the way the scorer finds it."""
    from anglecurate.model.layers import wrap_model
    from anglecurate.scoring.ranking import resolve_layer

    config = model.config.get_text_config()
    loaded = wrap_model(model, config.num_hidden_layers, config.hidden_size)
    index = resolve_layer(layer, loaded.num_layers, "angle_layer")
    if loaded.mlps[index] is None:
        raise UserError(
            f"layer {index} of {type(model).__name__} has no feed-forward block; pick another angle_layer"
        )
    return loaded.mlps[index]
