"""One pilot run: one arm, one seed, a short GRPO training with TRL's own ``GRPOTrainer``.

The run folder ``P/runs/ARM-seedS`` holds ``curve.parquet`` (one row per evaluation,
rewritten atomically after each), ``checkpoints/`` (TRL's, one kept, saved at every
evaluation) and ``done.json`` once finished. A killed run restarts from its last checkpoint
and keeps the curve rows up to it; a finished run is never redone.

Each optimizer step is TRL's: one generation batch of prompts x generations completions,
trained in micro-batches of :attr:`Task.micro_batch` completions with the gradients
accumulated (``grpo_args``), so memory follows the micro-batch and not the step.

Curve columns (docs/formats.md): arm, seed, step, tokens (generated completion tokens so
far), eval_tokens (tokens the held-out evaluations generated so far), seconds (training
wall time so far, evaluations excluded), eval_seconds (the evaluations' wall time so far),
accuracy (held-out),
train_reward (mean training reward since the previous evaluation), zero_variance (the share
of GRPO groups, one per prompt, whose rewards were all equal over the steps since the
previous evaluation: they give the policy no gradient), order_tokens and order_seconds (what
measuring the arm's order generated and took: a calibration's rollouts; 0 for the others),
and for ordered arms epoch, centre (the window's centre rank of that epoch), fed_accuracy and
fed_angle (the last finished epoch's feedback; null before the first).

``steps.parquet`` beside it has one row per optimizer step (``STEP_SCHEMA``): the step's
GRPO groups, the share with zero reward variance, the mean reward and the tokens generated.
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
from anglecurate.generation.graded import groups_with_variance
from anglecurate.generation.request import render_prompts
from anglecurate.piloting.arms import Order, curriculum_for, epochs_in
from anglecurate.piloting.evaluate import evaluate
from anglecurate.piloting.plan import PilotConfig, train_budget, train_micro_batch
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet

CURVE = "curve.parquet"
STEPS = "steps.parquet"
DONE = "done.json"
CURVE_SCHEMA = {
    "arm": pl.String,
    "seed": pl.Int64,
    "step": pl.Int64,
    "tokens": pl.Int64,
    "eval_tokens": pl.Int64,
    "seconds": pl.Float64,
    "eval_seconds": pl.Float64,
    "accuracy": pl.Float64,
    "train_reward": pl.Float64,
    "zero_variance": pl.Float64,
    "order_tokens": pl.Int64,
    "order_seconds": pl.Float64,
    "epoch": pl.Int64,
    "centre": pl.Float64,
    "fed_accuracy": pl.Float64,
    "fed_angle": pl.Float64,
}
STEP_SCHEMA = {
    "arm": pl.String,
    "seed": pl.Int64,
    "step": pl.Int64,
    "groups": pl.Int64,
    "zero_variance": pl.Float64,
    "train_reward": pl.Float64,
    "tokens": pl.Int64,
}


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


def _read(path: Path, schema: dict) -> pl.DataFrame:
    """``path`` in ``schema``; a column a file from an older version lacks is null."""
    if not path.is_file():
        return pl.DataFrame(schema=schema)
    frame = pl.read_parquet(path)
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame.columns]
    return frame.with_columns(missing).select(list(schema))


def read_curve(run: Path) -> pl.DataFrame:
    """The run's curve in ``CURVE_SCHEMA`` (one row per evaluation)."""
    return _read(run / CURVE, CURVE_SCHEMA)


def read_steps(run: Path) -> pl.DataFrame:
    """The run's per-step rows in ``STEP_SCHEMA`` (none for a run from before they were kept)."""
    return _read(run / STEPS, STEP_SCHEMA)


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


class _Recorder:
    """TRL callback state: evaluates and appends a curve row every ``eval_every`` steps."""

    def __init__(
        self, task: Task, arm: str, seed: int, run: Path, curve: pl.DataFrame, steps: pl.DataFrame, progress
    ):
        self.task, self.arm, self.seed, self.run = task, arm, seed, run
        self.rows = curve.to_dicts()
        self.steps = steps.to_dicts()
        self.order_cost = {"order_tokens": 0, "order_seconds": 0.0}
        self._groups: list[bool] = []  # this step's groups: True where the rewards vary
        self._step_rewards: list[float] = []
        last = self.rows[-1] if self.rows else {"tokens": 0, "seconds": 0.0}
        self.tokens, self.seconds = int(last["tokens"]), float(last["seconds"])
        self.eval_tokens = int(last.get("eval_tokens") or 0)  # a curve from before it was kept: 0
        self.eval_seconds = float(last.get("eval_seconds") or 0.0)
        self.rewards: list[float] = []
        self.progress = progress
        self.curriculum = None
        self.trainer = None  # set once built: evaluation shares its vLLM engine, if any
        self._t0 = None
        self._new_tokens = 0

    def count(self, completion_ids, rewards) -> None:
        """One generation batch's completions and rewards (TRL calls the reward once per
        batch, the k completions of each prompt in a row)."""
        new = sum(len(ids) for ids in completion_ids)
        self._new_tokens += new
        self.tokens += new
        kept = [float(r) for r in rewards if r is not None]
        self.rewards += kept
        self._step_rewards += kept
        self._groups += groups_with_variance(rewards, self.task.cfg.grpo.num_generations)

    def end_step(self, step: int) -> None:
        """Close optimizer step ``step``: its row of ``steps.parquet``."""
        groups = len(self._groups)
        self.steps.append(
            {
                "arm": self.arm,
                "seed": self.seed,
                "step": step,
                "groups": groups,
                "zero_variance": (groups - sum(self._groups)) / groups if groups else None,
                "train_reward": sum(self._step_rewards) / len(self._step_rewards)
                if self._step_rewards
                else None,
                "tokens": self._new_tokens,
            }
        )
        self._groups, self._step_rewards = [], []

    def zero_variance_since(self, step: int) -> float | None:
        """The share of groups without reward variance over the steps after the previous
        evaluation, up to ``step``."""
        previous = max((r["step"] for r in self.rows if r["step"] < step), default=None)
        if previous is None:
            return None
        counts = [(r["groups"], r["zero_variance"]) for r in self.steps if previous < r["step"] <= step]
        groups = sum(g for g, _ in counts if g)
        return sum(g * z for g, z in counts if g) / groups if groups else None

    def record(self, model, step: int) -> None:
        cfg = self.task.cfg
        t0 = time.perf_counter()
        accuracy, generated = evaluate(
            model,
            self.task.spec.tokenizer,
            self.task.eval_prompts,
            self.task.eval_answers,
            self.task.reward,
            cfg.grpo.max_completion_length,
            cfg.eval_temperature,
            seed=self.seed,
            trainer=self.trainer,
        )
        self.eval_tokens += generated
        self.eval_seconds += time.perf_counter() - t0
        row = {
            "arm": self.arm,
            "seed": self.seed,
            "step": step,
            "tokens": self.tokens,
            "eval_tokens": self.eval_tokens,
            "seconds": self.seconds,
            "eval_seconds": self.eval_seconds,
            "accuracy": accuracy,
            "train_reward": sum(self.rewards) / len(self.rewards) if self.rewards else None,
            "zero_variance": self.zero_variance_since(step),
            **self.order_cost,
            "epoch": None,
            "centre": None,
            "fed_accuracy": None,
            "fed_angle": None,
        }
        c = self.curriculum
        if c is not None:
            epoch = c.current
            row.update(epoch=epoch, centre=c.centre(epoch))
            if epoch > 0:
                row.update(fed_accuracy=c.accuracy(epoch - 1), fed_angle=c.angle(epoch - 1))
        self.rewards = []
        self.rows = [r for r in self.rows if r["step"] < step] + [row]
        atomic_write_parquet(pl.DataFrame(self.steps, schema=STEP_SCHEMA), self.run / STEPS)
        atomic_write_parquet(pl.DataFrame(self.rows, schema=CURVE_SCHEMA), self.run / CURVE)
        self.progress.log(f"{self.arm} seed {self.seed} step {step}: held-out accuracy {accuracy:.3f}")


def _callback(recorder: _Recorder, eval_every: int, max_steps: int):
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


def _tracking_reward(recorder: _Recorder, reward, curriculum):
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
    recorder = _Recorder(task, arm, seed, run, curve, steps, progress)
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
