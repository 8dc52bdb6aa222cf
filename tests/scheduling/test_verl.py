"""GainRLSampler through verl's own sampler factory, dataset (with its over-long prompt filter),
StatefulDataLoader and DataProto: uid-keyed epochs, feedback, and checkpoint resume."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

pytest.importorskip(
    "verl.experimental.dataset.sampler",
    reason="verl 0.8 removed data.sampler; test_verl_versions.py runs this file under verl 0.7.1",
)

from omegaconf import OmegaConf  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.main_ppo import create_rl_sampler  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402

from anglecurate.base.errors import UserError  # noqa: E402
from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule  # noqa: E402
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams  # noqa: E402

SAMPLER = {"sigma": 6.0, "n": 12.0, "adj_max": 100.0}
BATCH = 4


def verl_data_config(schedule_dir, tmp_path, max_prompt_length, **sampler):
    return OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": max_prompt_length,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "truncation": "error",
            "cache_dir": str(tmp_path / "cache"),
            "dataloader_num_workers": 0,
            "train_batch_size": BATCH,
            "shuffle": False,
            "sampler": {
                "class_path": "pkg://anglecurate.verl",
                "class_name": "GainRLSampler",
                "schedule": str(schedule_dir),
                **sampler,
            },
        }
    )


def build(schedule_dir, tmp_path, tokenizer, max_prompt_length=100_000, **sampler):
    """What verl's RayPPOTrainer._create_dataloader does, minus Ray."""
    config = verl_data_config(schedule_dir, tmp_path, max_prompt_length, **sampler)
    dataset = RLHFDataset(data_files=[str(schedule_dir / "rows.parquet")], tokenizer=tokenizer, config=config)
    sampler = create_rl_sampler(config, dataset)
    loader = StatefulDataLoader(
        dataset, batch_size=BATCH, sampler=sampler, collate_fn=collate_fn, drop_last=True, num_workers=0
    )
    return dataset, sampler, loader


def scored_batch(uids, right: set) -> DataProto:
    """A trained batch as verl hands it to update(): 2 rollouts per prompt, reward on the last token."""
    scores = torch.zeros(2 * len(uids), 5)
    scores[:, -1] = torch.tensor([1.0 if u in right else 0.0 for u in uids for _ in range(2)])
    return DataProto.from_dict(
        tensors={"token_level_scores": scores}, non_tensors={"uid": np.repeat(uids, 2)}
    )


@pytest.fixture
def schedule_dir(ranking, tmp_path):
    cfg = ScheduleConfig(
        str(ranking),
        str(tmp_path / "s"),
        per_epoch=8,
        seed=4,
        sampler=SAMPLER,
        batch_multiple=BATCH,
        exports=("verl",),
    )
    create_schedule(cfg)
    return tmp_path / "s"


def test_epochs_follow_feedback_by_uid_after_verl_filters_rows(schedule_dir, tmp_path, tokenizer):
    prompts = pl.read_parquet(schedule_dir / "rows.parquet")["prompt"].to_list()
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    limit = int(np.percentile(lengths, 75))  # verl drops the longest quarter
    dataset, sampler, loader = build(schedule_dir, tmp_path, tokenizer, max_prompt_length=limit)
    kept = dataset.dataframe["uid"]
    assert 20 < len(kept) < 40 and len(loader) == 2

    right = {u for u in kept if int(u[1:]) % 3 == 0}
    epochs = []
    for _ in range(2):
        fed = []
        for batch in loader:
            fed.extend(batch["uid"].tolist())
            sampler.update(scored_batch(batch["uid"], right))
        epochs.append(fed)

    ranked = pl.read_parquet(schedule_dir / "rows.parquet")["uid"].to_list()
    kept_ranked = [u for u in ranked if u in set(kept)]
    reference = GaussianSampler(len(kept_ranked), 8, SamplerParams.for_size(40, **SAMPLER), seed=4)
    assert epochs[0] == [kept_ranked[r] for r in reference.next_epoch()]
    reference.update(sum(u in right for u in epochs[0]) / 8)
    assert epochs[1] == [kept_ranked[r] for r in reference.next_epoch()]


def test_checkpoint_mid_epoch_resumes_at_the_same_row(schedule_dir, tmp_path, tokenizer):
    _, sampler, loader = build(schedule_dir, tmp_path, tokenizer)
    straight = []
    for _ in range(2):
        for i, batch in enumerate(loader):
            straight.append(batch["uid"].tolist())
            sampler.update(scored_batch(batch["uid"], {"q2", "q4"}))
            if len(straight) == 3 and i == 0:
                saved = loader.state_dict()  # verl saves this after step 3 (mid epoch 1)

    _, sampler2, loader2 = build(schedule_dir, tmp_path, tokenizer)
    loader2.load_state_dict(saved)
    resumed = [batch["uid"].tolist() for batch in loader2]
    assert resumed == straight[3:]


def test_sampler_config_errors(schedule_dir, tmp_path, tokenizer, ranking):
    with pytest.raises(UserError, match="no 'id_x' column"):
        build(schedule_dir, tmp_path, tokenizer, uid_field="id_x")
    odd = tmp_path / "odd"
    create_schedule(ScheduleConfig(str(ranking), str(odd), per_epoch=6, exports=("verl",)))
    with pytest.raises(UserError, match="--batch-multiple 4"):
        build(odd, tmp_path, tokenizer)
