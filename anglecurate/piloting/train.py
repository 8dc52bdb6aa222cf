"""One pilot run: one arm, one seed, a short GRPO training with TRL's own ``GRPOTrainer``.

The run folder ``P/runs/ARM-seedS`` holds ``curve.parquet`` and ``steps.parquet``
(:mod:`anglecurate.piloting.record`), ``checkpoints/`` (TRL's, one kept, saved at every
evaluation) and ``done.json`` once finished. A killed run restarts from its last checkpoint
and keeps the recorded rows up to it; a finished run is never redone.

Each optimizer step is TRL's: one generation batch of prompts x generations completions,
trained in micro-batches of :attr:`Task.micro_batch` completions with the gradients
accumulated (``grpo_args``), so memory follows the micro-batch and not the step.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from anglecurate.base.errors import UserError
from anglecurate.generation.request import render_prompts
from anglecurate.piloting.arms import Order, curriculum_for, epochs_in
from anglecurate.piloting.plan import PilotConfig, train_budget, train_micro_batch
from anglecurate.piloting.record import Recorder, read_curve, read_steps
from anglecurate.storage.atomic import atomic_write_json

DONE = "done.json"


@dataclass
class Task:
    """What every run of a pilot shares: the model (its resolved run spec), data and reward."""

    cfg: PilotConfig
    spec: object  # anglecurate.scoring.spec.RunSpec
    train_rows: list[dict]  # TRL's rows: prompt, answer, uid
    eval_prompts: list
    eval_answers: list[str]
    reward: object

    @functools.cached_property
    def sequence_tokens(self) -> int:
        """The longest training sequence in tokens: the longest prompt as TRL renders it
        (the chat template with the generation prompt), plus ``max_completion_length``."""
        tokenizer = self.spec.tokenizer
        prompts = [row["prompt"] for row in self.train_rows]
        texts, chat = render_prompts(tokenizer, prompts)
        longest = max(
            (len(ids) for ids in tokenizer(texts, add_special_tokens=not chat)["input_ids"]), default=0
        )
        return longest + self.cfg.grpo.max_completion_length

    @property
    def train_tokens(self) -> int:
        """The micro-batch token budget: --max-train-tokens, else the device's default."""
        return train_budget(self.cfg.max_train_tokens, "cuda" if torch.cuda.is_available() else "cpu")

    @functools.cached_property
    def micro_batch(self) -> int:
        """Completions per training forward and backward, under :attr:`train_tokens`."""
        g = self.cfg.grpo
        return train_micro_batch(
            g.prompts_per_step * g.num_generations, self.sequence_tokens, self.train_tokens
        )


def run_dir(folder: Path, arm: str, seed: int) -> Path:
    return folder / "runs" / f"{arm}-seed{seed}"


def _last_checkpoint(run: Path) -> Path | None:
    found = sorted(
        (p for p in (run / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return found[-1] if found else None


def load_policy(task: Task):
    """The policy as trainable weights: fp32 (bf16 with --bf16), a fresh copy per run."""
    dtype = torch.bfloat16 if task.cfg.grpo.bf16 else torch.float32
    model = task.spec.load_model(dtype, torch.device("cpu"), causal_lm=True).base
    # A GGUF checkpoint is dequantised to plain tensors on load; the marker transformers
    # leaves would make the Trainer refuse to train them.
    model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    return model.train()


def _callback(recorder: Recorder, eval_every: int, max_steps: int):
    from transformers import TrainerCallback

    class PilotCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            recorder._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if recorder._t0 is not None:
                recorder.seconds += time.perf_counter() - recorder._t0
            recorder.progress.advance(1, recorder._new_tokens)  # steps, and generated tokens/s
            recorder.end_step(state.global_step)
            recorder._new_tokens = 0
            if state.global_step % eval_every == 0 or state.global_step == max_steps:
                recorder.record(model, state.global_step)

    return PilotCallback()


def _tracking_reward(recorder: Recorder, reward, curriculum):
    def pilot_reward(prompts, completions, completion_ids=None, **kwargs):
        rewards = reward(prompts=prompts, completions=completions, **kwargs)
        recorder.count(completion_ids or [], rewards)
        if curriculum is not None:
            curriculum.record(rewards)
        return rewards

    pilot_reward.__name__ = getattr(reward, "__name__", "reward")
    return pilot_reward


def grpo_args(cfg: PilotConfig, run: Path, seed: int, micro_batch: int):
    """TRL's config of one run: ``max_steps`` bounds it, so the epoch count is TRL's own.

    One optimizer step is one generation batch of prompts x generations completions (as
    with one big batch: the same prompts, the same sampling), trained in
    ``completions / micro_batch`` micro-batches of ``micro_batch`` with the gradients
    accumulated: ``steps_per_generation`` = ``gradient_accumulation_steps``. TRL's default
    loss (``dapo``) divides each micro-batch's token-loss sum by the token count of the whole
    generation batch, so the accumulated gradient is the one-batch gradient (to float
    rounding). (``grpo``'s mean over sequences is exact too, with equal micro-batches;
    ``bnpo``, normalised by each micro-batch's own tokens, is not.)"""
    from trl import GRPOConfig

    g = cfg.grpo
    completions = g.prompts_per_step * g.num_generations
    if completions % micro_batch:
        raise ValueError(f"micro_batch {micro_batch} does not divide the {completions} completions of a step")
    accumulation = completions // micro_batch
    return GRPOConfig(
        output_dir=str(run / "checkpoints"),
        seed=seed,
        data_seed=seed,
        max_steps=cfg.steps,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,
        loss_type="dapo",  # named: the normalisation that makes micro-batches exact (above)
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length,
        learning_rate=g.learning_rate,
        lr_scheduler_type="constant",
        temperature=g.temperature,
        beta=g.beta,
        bf16=g.bf16,
        use_vllm=g.use_vllm,
        **({"vllm_mode": "colocate"} if g.use_vllm else {}),  # one process, no vLLM server to start
        gradient_checkpointing=g.gradient_checkpointing,
        save_strategy="steps",
        save_steps=cfg.eval_every,
        save_total_limit=1,
        logging_steps=cfg.eval_every,
        report_to=[],
        disable_tqdm=True,
        shuffle_dataset=True,
        use_cpu=not torch.cuda.is_available(),
    )


def train_one(task: Task, arm: str, seed: int, order: Order | None, progress) -> pl.DataFrame:
    """Train (or resume, or skip) the run of ``arm`` with ``seed``; returns its curve."""
    from datasets import Dataset

    cfg = task.cfg
    run = run_dir(Path(cfg.out), arm, seed)
    if (run / DONE).is_file():
        return read_curve(run)
    run.mkdir(parents=True, exist_ok=True)
    checkpoint = _last_checkpoint(run)
    start = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
    curve = read_curve(run).filter(pl.col("step") <= start)
    steps = read_steps(run).filter(pl.col("step") <= start)
    progress.start(f"{arm} seed {seed}", cfg.steps, completed=start)
    recorder = Recorder(task, arm, seed, run, curve, steps, progress)
    model = load_policy(task)
    dataset = Dataset.from_list(task.train_rows)
    per_epoch = cfg.epoch_prompts
    curriculum = None
    if order is not None:
        epochs = epochs_in(cfg.steps, cfg.grpo.prompts_per_step, per_epoch)
        uids = [row["uid"] for row in task.train_rows]
        curriculum = curriculum_for(order, uids, per_epoch, epochs, seed)
        recorder.curriculum = curriculum
        recorder.order_cost = {"order_tokens": order.tokens, "order_seconds": order.seconds}
    with _no_deprecation_notices():
        args = grpo_args(cfg, run, seed, task.micro_batch)
    kwargs = dict(
        model=model,
        args=args,
        train_dataset=dataset,
        reward_funcs=[_tracking_reward(recorder, task.reward, curriculum)],
        processing_class=task.spec.tokenizer,
        callbacks=[_callback(recorder, cfg.eval_every, cfg.steps)],
    )
    if curriculum is None:
        from trl import GRPOTrainer

        trainer = GRPOTrainer(**kwargs)
    else:
        from anglecurate.scheduling.trl import GainRLGRPOTrainer

        trainer = GainRLGRPOTrainer(**kwargs, curriculum=curriculum)
    _quiet(trainer)
    recorder.trainer = trainer
    if not recorder.rows:  # after the trainer is built, so a colocated vLLM engine is shared
        recorder.record(model, 0)
    try:
        with _no_save_bars(), _no_deprecation_notices():
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except (ValueError, RuntimeError) as exc:
        if "out of memory" in str(exc).lower():
            micro = task.micro_batch
            lower = "--max-train-tokens, " if micro > 1 else ""  # one completion is the least a batch holds
            raise UserError(
                f"{arm} seed {seed} ran out of memory (micro-batches of {micro} completions, up to "
                f"{micro * task.sequence_tokens} tokens); lower {lower}--max-completion-length or "
                "--prompts-per-step (one generation batch), or add --gradient-checkpointing; rerun to resume"
            ) from exc
        raise
    atomic_write_json({"arm": arm, "seed": seed, "steps": cfg.steps}, run / DONE)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # a finished run needs no weights
    return read_curve(run)


def _quiet(trainer) -> None:
    """The pilot's own bar and lines speak for the run: drop TRL's printed log dicts."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)


@contextlib.contextmanager
def _no_save_bars():
    """No "Writing model shards" bar at every checkpoint; restored afterwards."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


@contextlib.contextmanager
def _no_deprecation_notices():
    """None of transformers' notices that its ``gradient_checkpointing`` names are
    deprecated: TRL's config and trainer use them, not the user, who could do nothing about
    them. The warning filters are restored on exit."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning
        )
        yield
