"""A real trl.GRPOTrainer on the tiny model trains on exactly the schedule's prompts, in order:
open loop from the flattened export, closed loop through GainRLGRPOTrainer (and its resume)."""

from __future__ import annotations

import polars as pl
import pytest
import torch

pytest.importorskip("trl")

from datasets import load_dataset  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from anglecurate.scheduling.curriculum import Curriculum  # noqa: E402
from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule  # noqa: E402
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams  # noqa: E402
from anglecurate.trl import GainRLGRPOTrainer, track  # noqa: E402

SAMPLER = {"sigma": 4.0, "n": 12.0, "adj_max": 100.0}


def grpo_args(out, **overrides) -> GRPOConfig:
    # 4 completions per micro-batch, 2 per prompt, 2 micro-batches per generation: GRPO draws
    # 4 distinct prompts per generation, so schedules use --batch-multiple 4.
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_generations=2,
        max_completion_length=4,
        num_train_epochs=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        bf16=False,  # TRL defaults to bf16 autocast; this CPU has no fast bf16 matmul
    )
    return GRPOConfig(**{**base, **overrides})


def recorder(seen: list):
    """A reward function that logs the uid of every completion it scores; even ids are right."""

    def even_is_right(completions, uid, **kwargs):
        seen.extend(uid)
        return [1.0 if int(u[1:]) % 2 == 0 else 0.0 for u in uid]

    return even_is_right


def twice(uids):
    return [u for u in uids for _ in range(2)]  # num_generations completions per prompt


def test_open_loop_export_trains_in_schedule_order(ranking, tiny_model_dir, tmp_path):
    cfg = ScheduleConfig(
        str(ranking), str(tmp_path / "s"), per_epoch=8, epochs=2, seed=1, batch_multiple=4, exports=("trl",)
    )
    schedule, _ = create_schedule(cfg)
    dataset = load_dataset("parquet", data_files=str(tmp_path / "s" / "trl.parquet"), split="train")
    seen: list = []
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=recorder(seen),
        args=grpo_args(tmp_path / "run", shuffle_dataset=False),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.train()
    assert seen == twice(schedule["uid"].to_list())


def run_closed_loop(tiny_model_dir, schedule_dir, out, seen, resume=None):
    dataset = load_dataset("parquet", data_files=str(schedule_dir / "rows.parquet"), split="train")
    curriculum = Curriculum(schedule_dir, dataset["uid"])
    trainer = GainRLGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[track(curriculum, recorder(seen))],
        args=grpo_args(out, num_train_epochs=2, save_strategy="steps", save_steps=1),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        curriculum=curriculum,
    )
    trainer.train(resume_from_checkpoint=resume)
    return curriculum


def test_closed_loop_trainer_follows_the_rewards_and_resumes(ranking, tiny_model_dir, tmp_path):
    s = tmp_path / "s"
    cfg = ScheduleConfig(
        str(ranking), str(s), per_epoch=8, seed=9, sampler=SAMPLER, batch_multiple=4, exports=("trl",)
    )
    create_schedule(cfg)
    rows = pl.read_parquet(s / "rows.parquet")
    seen: list = []
    curriculum = run_closed_loop(tiny_model_dir, s, tmp_path / "run", seen)

    reference = GaussianSampler(40, 8, SamplerParams.for_size(40, **SAMPLER), seed=9)
    epoch0 = rows["uid"].gather(reference.next_epoch()).to_list()
    assert epoch0 == pl.read_parquet(s / "schedule.parquet")["uid"].to_list()
    accuracy = sum(int(u[1:]) % 2 == 0 for u in epoch0) / 8
    assert curriculum.accuracy(0) == pytest.approx(accuracy)
    reference.update(accuracy, curriculum.angle(0))  # the training-time angle measured at layer 2
    epoch1 = rows["uid"].gather(reference.next_epoch()).to_list()
    assert seen == twice(epoch0 + epoch1)
    assert epoch1 != epoch0

    # A new process resuming from the checkpoint at the end of epoch 0 trains epoch 1 again;
    # one resuming mid-epoch 1 (one optimizer step = one generation of 4 prompts) trains
    # the rest of it: the same examples, not a redraw.
    for checkpoint, expected in (("checkpoint-2", epoch1), ("checkpoint-3", epoch1[4:])):
        resumed: list = []
        run_closed_loop(
            tiny_model_dir, s, tmp_path / "run", resumed, resume=str(tmp_path / "run" / checkpoint)
        )
        assert resumed == twice(expected), checkpoint


@pytest.mark.slow
def test_smollm2_trains_on_the_schedule_of_its_own_ranking(tmp_path):
    """The real model end to end: score 8 MATH rows (verl layout), schedule, GRPO steps."""
    from transformers import AutoModelForCausalLM

    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import score
    from anglecurate.sources.builtin import resolve_builtin_model

    from ..conftest import shared_file

    data = tmp_path / "math.parquet"
    pl.read_parquet(shared_file("math_train.parquet")).head(8).write_parquet(data)
    score(ScoreConfig(model="builtin:smollm2", data=str(data), out=str(tmp_path / "out"), dtype="fp32"))
    cfg = ScheduleConfig(
        str(tmp_path / "out"), str(tmp_path / "s"), per_epoch=4, epochs=2, batch_multiple=4, exports=("trl",)
    )
    schedule, _ = create_schedule(cfg)
    gguf = resolve_builtin_model("builtin:smollm2")
    # GGUF loading dequantises to plain fp32 weights but marks the model quantized, which
    # Trainer refuses to fine-tune; the same weights in a plain model train.
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dataset = load_dataset("parquet", data_files=str(tmp_path / "s" / "trl.parquet"), split="train")
    seen: list = []

    def record(completions, uid, **kwargs):
        seen.extend(uid)
        return [float(len(c)) for c in completions]

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=record,
        args=grpo_args(tmp_path / "run", shuffle_dataset=False),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    assert seen == twice(schedule["uid"].to_list())
