"""Memory bounded by a micro-batch: each step's completions trained a micro-batch at a time,
with the same step and the same result to float tolerance."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from anglecurate.piloting.plan import (
    DEFAULT_TRAIN_TOKENS,
    GRPOOptions,
    PilotConfig,
    train_budget,
    train_micro_batch,
)

from ..helpers import run_cli
from .test_pilot import pilot_args

pytest.importorskip("trl")

from anglecurate.piloting import train as pilot_train  # noqa: E402


@pytest.mark.parametrize(
    ("completions", "tokens", "budget", "micro"),
    [
        (64, 300, 2048, 4),  # 6 sequences fit; 4 is the largest divisor of 64 up to 6
        (64, 300, 10**9, 64),  # everything fits: one batch
        (64, 300, 100, 1),  # not one sequence fits: one at a time, not zero
        (24, 100, 1100, 8),  # 11 fit; divisors of 24: 8
        (7, 10, 60, 1),  # a prime count: only 1 or all of it
        (7, 10, 70, 7),
    ],
)
def test_the_micro_batch_is_the_largest_divisor_under_the_budget(completions, tokens, budget, micro):
    assert train_micro_batch(completions, tokens, budget) == micro


def test_the_budget_is_the_option_or_the_device_default():
    assert train_budget(None, "cpu") == DEFAULT_TRAIN_TOKENS["cpu"]
    assert train_budget(None, "cuda") == DEFAULT_TRAIN_TOKENS["cuda"]
    assert train_budget(None, "mps") == DEFAULT_TRAIN_TOKENS["cuda"]
    assert train_budget(512, "cuda") == 512


def _config(tmp_path, **grpo) -> PilotConfig:
    return PilotConfig(
        model="m", data="d", field="q", answer_field="a", out=str(tmp_path), grpo=GRPOOptions(**grpo)
    )


def test_grpo_args_keep_one_generation_per_step_and_accumulate_the_rest(tmp_path):
    cfg = _config(tmp_path, prompts_per_step=8, num_generations=8)
    args = pilot_train.grpo_args(cfg, tmp_path, seed=0, micro_batch=4)
    assert args.per_device_train_batch_size == 4
    assert args.gradient_accumulation_steps == 16 == args.steps_per_generation
    assert args.generation_batch_size == 64  # one generation of prompts x generations per step
    assert args.loss_type == "dapo"
    with pytest.raises(ValueError, match="does not divide"):
        pilot_train.grpo_args(cfg, tmp_path, seed=0, micro_batch=5)


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_accumulated_micro_batches_give_the_one_batch_gradient(tiny_model_dir, tmp_path):
    """TRL's loss under grpo_args: one batch of 4 completions of unequal lengths, and the
    same batch in micro-batches of 1 and 2, give the same gradient. A loss normalised by
    each micro-batch's own tokens (``bnpo``) would weight them differently: this fails."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = _config(tmp_path, prompts_per_step=2, num_generations=2, max_completion_length=6)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "prompt_ids": torch.randint(5, 1000, (4, 5), generator=generator),
        "prompt_mask": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]),
        "completion_ids": torch.randint(5, 1000, (4, 6), generator=generator),
        "completion_mask": torch.tensor(
            [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
        ),
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5]),
    }
    batch["num_items_in_batch"] = batch["completion_mask"].sum()
    grads = {}
    for micro in (4, 2, 1):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        trainer = GRPOTrainer(
            model=model,
            args=pilot_train.grpo_args(cfg, tmp_path / str(micro), seed=0, micro_batch=micro),
            train_dataset=Dataset.from_list([{"prompt": "x"}] * 4),
            reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
            processing_class=tokenizer,
        )
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 4 // micro  # what the training loop sets
        for start in range(0, 4, micro):
            part = {k: v if v.dim() == 0 else v[start : start + micro] for k, v in batch.items()}
            trainer._compute_loss(trainer.model, part).backward()
        grads[micro] = _flat_grad(trainer.model)
    assert grads[4].norm() > 0
    for micro in (2, 1):
        assert torch.linalg.vector_norm(grads[micro] - grads[4]) <= 1e-5 * grads[4].norm()


def test_a_pilot_in_micro_batches_of_one_group_matches_one_batch_of_all(
    monkeypatch, capsys, tiny_model_dir, data, tmp_path
):
    """The same pilot (uniform and gainrl, 2 steps) with every step's 4 completions in one
    batch and in micro-batches of one group (2): the same curves and the same gradients."""
    grads: dict[tuple, list[torch.Tensor]] = {}
    make_callback = pilot_train._callback

    def spying(recorder, eval_every, max_steps):
        callback = make_callback(recorder, eval_every, max_steps)

        def on_pre_optimizer_step(args, state, control, model=None, **kwargs):
            key = (recorder.task.cfg.out, recorder.arm)
            grads.setdefault(key, []).append(_flat_grad(model).clone())

        callback.on_pre_optimizer_step = on_pre_optimizer_step
        return callback

    monkeypatch.setattr(pilot_train, "_callback", spying)
    common = ("--arms", "uniform,gainrl", "--json")  # pilot_args: 2 steps of 2 prompts x 2
    whole = tmp_path / "whole"
    code, stdout, err = run_cli(
        monkeypatch, capsys, *pilot_args(tiny_model_dir, data, whole, *common, "--max-train-tokens", "100000")
    )
    assert code == 0, err
    training = json.loads(stdout)["training"]
    assert training["micro_batch"] == 4 and training["accumulation_steps"] == 1
    group = tmp_path / "group"
    budget = 2 * training["sequence_tokens"]  # two completions of the longest sequence: one group
    args = pilot_args(tiny_model_dir, data, group, *common, "--max-train-tokens", budget)
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--ranking", whole / "ranking")
    assert code == 0, err
    training = json.loads(stdout)["training"]
    assert training["micro_batch"] == 2 and training["accumulation_steps"] == 2

    a, b = pl.read_parquet(whole / "pilot.parquet"), pl.read_parquet(group / "pilot.parquet")
    assert a.height == b.height == 6  # 2 arms x (step 0 + 2 steps)
    for column in ("arm", "seed", "step", "tokens", "eval_tokens", "epoch"):
        assert a[column].to_list() == b[column].to_list(), column
    for column in ("accuracy", "train_reward", "centre", "fed_accuracy", "fed_angle"):
        assert a[column].to_list() == pytest.approx(b[column].to_list(), abs=1e-6, nan_ok=True), column
    for arm in ("uniform", "gainrl"):
        one, split = grads[(str(whole), arm)], grads[(str(group), arm)]
        assert len(one) == len(split) == 2
        for g1, g2 in zip(one, split, strict=True):
            assert torch.linalg.vector_norm(g1 - g2) <= 1e-4 * g1.norm(), arm
