"""GainRLDataset through verl's own code (0.9.1 here; 0.8.0 and 0.7.1 through
test_verl_versions.py): verl's dataset class factory loads it from ``data.custom_cls``, its
sampler factory builds the sequential sampler, its ``StatefulDataLoader`` batches it, its
``DataProto`` carries the rewards, and ``RayPPOTrainer``'s own ``_save_checkpoint`` and
``_load_checkpoint`` write and restore the checkpoints. The training loop is verl's PPO
``fit`` minus Ray: fetch a batch, score it, save when due, then ``on_batch_end``."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

pytest.importorskip("verl.utils.dataset.rl_dataset")

import verl  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import RayPPOTrainer  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402

try:  # verl 0.9 moved the factories out of main_ppo
    from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler  # noqa: E402
except ImportError:
    from verl.trainer.main_ppo import create_rl_dataset, create_rl_sampler  # noqa: E402

from anglecurate.base.errors import UserError  # noqa: E402
from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule  # noqa: E402
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams  # noqa: E402
from anglecurate.scheduling.verl_dataset import RECEIPT_FILE, GainRLDataset  # noqa: E402

SAMPLER = {"sigma": 6.0, "n": 12.0, "adj_max": 100.0}
BATCH, PER_EPOCH, EPOCHS, ROLLOUTS = 4, 8, 3, 2


@pytest.fixture
def schedule_dir(ranking, tmp_path):
    cfg = ScheduleConfig(
        str(ranking),
        str(tmp_path / "s"),
        per_epoch=PER_EPOCH,
        seed=4,
        sampler=SAMPLER,
        batch_multiple=BATCH,
        exports=("verl",),
    )
    create_schedule(cfg)
    rows = pl.read_parquet(tmp_path / "s" / "rows.parquet")
    rows.head(6).write_parquet(tmp_path / "val.parquet")  # a held-out set for data.val_files
    return tmp_path / "s"


def verl_config(schedule_dir, tmp_path, max_prompt_length=100_000, data=None, trainer=None, **custom):
    """verl's own default ``data`` config (its legacy_data.yaml, as each version ships it) with
    the run's settings, and the ``trainer`` keys that its checkpoint code reads."""
    defaults = OmegaConf.load(Path(verl.__file__).parent / "trainer" / "config" / "data" / "legacy_data.yaml")
    settings = {
        "train_files": [str(schedule_dir / "rows.parquet")],
        "val_files": [str(tmp_path / "val.parquet")],
        "max_prompt_length": max_prompt_length,
        "filter_overlong_prompts": True,
        "filter_overlong_prompts_workers": 1,
        "cache_dir": str(tmp_path / "cache"),
        "dataloader_num_workers": 0,
        "train_batch_size": BATCH,
        "shuffle": False,
        "custom_cls": {
            "path": "pkg://anglecurate.verl",
            "name": "GainRLDataset",
            "schedule": str(schedule_dir),
            "epochs": EPOCHS,
            **custom,
        },
        **(data or {}),
    }
    return OmegaConf.create(
        {
            "data": OmegaConf.merge(defaults, settings),
            "trainer": {
                "total_epochs": 1,
                "total_training_steps": None,
                "use_v1": False,
                "default_local_dir": str(tmp_path / "checkpoints"),
                "default_hdfs_dir": None,
                "resume_mode": "auto",
                "resume_from_path": None,
                "del_local_ckpt_after_load": False,
                **(trainer or {}),
            },
            "actor_rollout_ref": {"actor": {"checkpoint": {"async_save": False}}},
        }
    )


class Workers:
    """The actor worker group: model weights are not what these tests check."""

    def save_checkpoint(self, *args, **kwargs):
        pass

    def load_checkpoint(self, *args, **kwargs):
        pass


def build(config, tokenizer):
    """What verl's trainers do with ``data``: the dataset through verl's class factory, its
    sampler factory, and the StatefulDataLoader with the trainer's arguments."""
    dataset = create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)
    loader = StatefulDataLoader(
        dataset=dataset,
        batch_size=config.data.get("gen_batch_size") or config.data.train_batch_size,
        num_workers=config.data.dataloader_num_workers,
        drop_last=True,
        collate_fn=collate_fn,
        sampler=create_rl_sampler(config.data, dataset),
    )
    trainer = SimpleNamespace(
        config=config, global_steps=0, actor_rollout_wg=Workers(), use_critic=False, train_dataloader=loader
    )
    return dataset, loader, trainer


def reward_by_step(step: int, uid: str) -> float:
    """Odd steps right, even steps wrong: epoch 0 (steps 1, 2) has accuracy 0.5 and leaves the
    centre where it is, but without its last step's rewards it would be 1.0 and move it."""
    return float(step % 2)


def fit(
    dataset, trainer, reward=reward_by_step, save_freq=0, killed_in=None, killed_after_save=None, angle=None
):
    """verl's RayPPOTrainer.fit, minus Ray: the uids trained at each step. ``killed_in``: the
    process dies in that step, once its batch is fetched; ``killed_after_save``: it dies in
    that step between the checkpoint and ``on_batch_end``."""
    fed = []
    total = len(trainer.train_dataloader) * trainer.config.trainer.total_epochs
    trainer.global_steps += 1
    for batch_dict in trainer.train_dataloader:
        if trainer.global_steps == killed_in:
            return fed
        batch = DataProto.from_single_dict(batch_dict)
        uids = [str(u) for u in batch.non_tensor_batch["uid"]]  # the rows' uid, before verl's own
        fed.append(uids)
        batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in uids], dtype=object)
        batch = batch.repeat(repeat_times=ROLLOUTS, interleave=True)
        scores = torch.zeros(len(batch), 5)  # the sequence reward sits on the last token
        scores[:, -1] = torch.tensor([reward(trainer.global_steps, u) for u in uids for _ in range(ROLLOUTS)])
        batch.batch["token_level_scores"] = scores
        if angle is not None:
            batch.non_tensor_batch["gainrl_angle"] = np.full(len(batch), angle, dtype=object)
        is_last_step = trainer.global_steps >= total
        if save_freq and (is_last_step or trainer.global_steps % save_freq == 0):
            RayPPOTrainer._save_checkpoint(trainer)
        if trainer.global_steps == killed_after_save:
            return fed
        trainer.global_steps += 1
        if is_last_step:
            return fed
        dataset.on_batch_end(batch=batch)
    return fed


def reference_epochs(kept_ranked, accuracies):
    sampler = GaussianSampler(len(kept_ranked), PER_EPOCH, SamplerParams.for_size(40, **SAMPLER), seed=4)
    epochs = []
    for accuracy in accuracies:
        epochs.append([kept_ranked[r] for r in sampler.next_epoch()])
        sampler.update(accuracy)
    return epochs


def test_epochs_follow_feedback_by_uid_after_verl_filters_rows(schedule_dir, tmp_path, tokenizer):
    prompts = pl.read_parquet(schedule_dir / "rows.parquet")["prompt"].to_list()
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    limit = int(np.percentile(lengths, 75))  # verl drops the longest quarter
    config = verl_config(schedule_dir, tmp_path, max_prompt_length=limit)
    dataset, loader, trainer = build(config, tokenizer)
    assert type(dataset) is GainRLDataset
    assert type(loader.sampler).__name__ == "SequentialSampler"  # data.shuffle=False
    kept = dataset.dataframe["uid"]
    assert 20 < len(kept) < 40
    assert len(dataset) == PER_EPOCH * EPOCHS and len(loader) == PER_EPOCH * EPOCHS // BATCH

    right = {u for u in kept if int(u[1:]) % 3 == 0}
    fed = fit(dataset, trainer, reward=lambda step, uid: float(uid in right))
    epochs = [sum(fed[i : i + 2], []) for i in range(0, len(fed), 2)]

    ranked = pl.read_parquet(schedule_dir / "rows.parquet")["uid"].to_list()
    kept_ranked = [u for u in ranked if u in set(kept)]
    accuracies = [sum(u in right for u in epoch) / PER_EPOCH for epoch in epochs]
    assert epochs == reference_epochs(kept_ranked, accuracies)
    assert dataset.curriculum.accuracy(1) == accuracies[1]


def test_angle_carried_by_the_batch_moves_the_centre(schedule_dir, tmp_path, tokenizer):
    dataset, _, trainer = build(verl_config(schedule_dir, tmp_path), tokenizer)
    fit(dataset, trainer, reward=lambda step, uid: 1.0, angle=0.25)
    assert dataset.curriculum.angle(0) == pytest.approx(0.25)
    params = SamplerParams.for_size(40, **SAMPLER)
    moved = params.n * np.tanh(params.alpha * (1.0 - params.beta)) + params.n * np.tanh(params.alpha * 0.25)
    assert dataset.curriculum.centre(1) == pytest.approx(min(moved, params.adj_max))


@pytest.mark.parametrize("saved_at", [2, 3], ids=["epoch-boundary", "mid-epoch"])
def test_resume_from_verls_checkpoint_matches_an_uninterrupted_run(
    schedule_dir, tmp_path, tokenizer, saved_at
):
    config = verl_config(schedule_dir, tmp_path / "straight")
    dataset, _, trainer = build(config, tokenizer)
    straight = fit(dataset, trainer)
    straight_centres = [dataset.curriculum.centre(e) for e in range(EPOCHS)]

    config = verl_config(schedule_dir, tmp_path / "killed")
    dataset, _, trainer = build(config, tokenizer)
    first = fit(dataset, trainer, save_freq=saved_at, killed_in=saved_at + 1)
    assert (tmp_path / "killed" / "checkpoints" / f"global_step_{saved_at}" / RECEIPT_FILE).exists()

    dataset, _, trainer = build(config, tokenizer)  # a new process
    RayPPOTrainer._load_checkpoint(trainer)
    assert trainer.global_steps == saved_at
    resumed = fit(dataset, trainer)
    assert first[:saved_at] + resumed == straight
    assert [dataset.curriculum.centre(e) for e in range(EPOCHS)] == straight_centres
    assert dataset.curriculum.accuracy(0) == 0.5


def test_resume_without_the_last_steps_rewards_says_so(schedule_dir, tmp_path, tokenizer, caplog):
    config = verl_config(schedule_dir, tmp_path)
    dataset, _, trainer = build(config, tokenizer)
    fit(dataset, trainer, save_freq=2, killed_after_save=2)  # before verl's on_batch_end
    assert not (tmp_path / "checkpoints" / "global_step_2" / RECEIPT_FILE).exists()
    dataset, _, trainer = build(config, tokenizer)
    RayPPOTrainer._load_checkpoint(trainer)
    with caplog.at_level(logging.WARNING, logger="anglecurate"):
        fit(dataset, trainer)
    assert "rewards of step 2" in caplog.text
    assert dataset.curriculum.accuracy(0) == 1.0  # step 1's rewards only


def test_open_loop_replays_the_schedule_and_validation_is_verls(ranking, schedule_dir, tmp_path, tokenizer):
    drawn = tmp_path / "open"
    create_schedule(
        ScheduleConfig(str(ranking), str(drawn), PER_EPOCH, epochs=3, sampler=SAMPLER, exports=("verl",))
    )
    config = verl_config(
        drawn,
        tmp_path,
        feedback=False,
        epochs=None,
        data={"dataloader_num_workers": 2},
        trainer={"use_v1": True},
    )
    dataset = create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)
    schedule = pl.read_parquet(drawn / "schedule.parquet")
    assert len(dataset) == schedule.height == 3 * PER_EPOCH  # epochs default to the epochs drawn
    assert [dataset[i]["uid"] for i in range(len(dataset))] == schedule["uid"].to_list()

    val = create_rl_dataset(config.data.val_files, config.data, tokenizer, None, is_train=False)
    plain = RLHFDataset(data_files=config.data.val_files, tokenizer=tokenizer, config=config.data)
    assert type(val) is GainRLDataset and len(val) == len(plain) == 6
    assert [val[i]["uid"] for i in range(6)] == [plain[i]["uid"] for i in range(6)]
    assert val.state_dict() == {}


def test_a_trainer_that_never_calls_on_batch_end_is_stopped(schedule_dir, tmp_path, tokenizer):
    dataset, loader, _ = build(verl_config(schedule_dir, tmp_path), tokenizer)
    batches = iter(loader)
    next(batches), next(batches)  # epoch 0, no on_batch_end (verl 0.9's V1 trainer)
    with pytest.raises(UserError, match="never calls on_batch_end"):
        next(batches)


def test_a_second_pass_is_refused(schedule_dir, tmp_path, tokenizer):
    dataset, loader, trainer = build(verl_config(schedule_dir, tmp_path, feedback=False), tokenizer)
    fit(dataset, trainer)
    with pytest.raises(UserError, match="trainer.total_epochs=1"):
        next(iter(loader))


@pytest.mark.parametrize(
    ("data", "trainer", "custom", "needle"),
    [
        ({"shuffle": True}, {}, {}, "data.shuffle=False"),
        ({"dataloader_num_workers": 8}, {}, {}, "dataloader_num_workers=0"),
        ({}, {"use_v1": True}, {}, "trainer.use_v1=False"),
        ({}, {"total_epochs": 30}, {}, "trainer.total_epochs=1"),
        ({"train_batch_size": 3}, {}, {}, "--batch-multiple 3"),
        ({}, {}, {"schedule": None}, "+data.custom_cls.schedule"),
        ({}, {}, {"uid_field": "id_x"}, "no 'id_x' column"),
        ({}, {}, {"reward_max": 0.0}, "reward_max"),
        ({}, {}, {"sampler": "x"}, "unknown data.custom_cls.sampler"),
    ],
)
def test_config_errors(schedule_dir, tmp_path, tokenizer, data, trainer, custom, needle):
    config = verl_config(schedule_dir, tmp_path, data=data, trainer=trainer, **custom)
    with pytest.raises(UserError, match=re.escape(needle)) as err:
        create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)
    assert len(str(err.value).splitlines()) == 1


def test_validation_file_equal_to_the_training_file_is_refused(schedule_dir, tmp_path, tokenizer):
    config = verl_config(schedule_dir, tmp_path, data={"val_files": [str(schedule_dir / "rows.parquet")]})
    with pytest.raises(UserError, match="held-out"):
        create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)


def test_a_trainer_setting_that_cannot_be_read_is_not_taken_for_absent(schedule_dir, tmp_path, tokenizer):
    """Only a missing key or parent means "no trainer setting": a config that fails otherwise
    (an interpolation that does not resolve) is raised, not a switched-off use_v1 check."""
    from omegaconf.errors import InterpolationResolutionError

    config = verl_config(schedule_dir, tmp_path, trainer={"use_v1": "${trainer.no_such_key}"})
    with pytest.raises(InterpolationResolutionError, match="no_such_key"):
        create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)


def test_a_data_config_without_a_trainer_reads_as_unset(monkeypatch):
    from anglecurate.scheduling import verl_dataset

    assert verl_dataset._trainer_setting(OmegaConf.create({"shuffle": False}), "use_v1") is None  # no parent
    assert verl_dataset._trainer_setting({"shuffle": False}, "use_v1") is None  # a plain mapping
    assert verl_dataset._trainer_setting(OmegaConf.create({"data": {}}).data, "use_v1") is None  # no trainer
    whole = OmegaConf.create({"data": {}, "trainer": {"use_v1": True}})
    assert verl_dataset._trainer_setting(whole.data, "use_v1") is True

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(OmegaConf, "select", broken)
    with pytest.raises(RuntimeError, match="boom"):
        verl_dataset._trainer_setting(whole.data, "use_v1")
