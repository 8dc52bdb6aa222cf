"""What a pilot run records: its curve (one row per held-out evaluation) and its steps (one
row per optimizer step), and the recorder that writes both as the run trains.

``P/runs/ARM-seedS/curve.parquet`` (``CURVE_SCHEMA``, docs/pilot.md): arm, seed, step,
tokens (generated completion tokens so far), eval_tokens (tokens the held-out evaluations
generated so far), seconds (training wall time so far, evaluations excluded), eval_seconds
(the evaluations' wall time so far), accuracy (held-out), train_reward (mean training
reward since the previous evaluation), zero_variance (the share of GRPO groups, one per
prompt, whose rewards were all equal over the steps since the previous evaluation: they
give the policy no gradient), order_tokens and order_seconds (what measuring the arm's
order generated and took: a calibration's rollouts; 0 for the others), and for ordered arms
epoch, centre (the window's centre rank of that epoch), fed_accuracy and fed_angle (the last
finished epoch's feedback; null before the first).

``steps.parquet`` beside it (``STEP_SCHEMA``): per optimizer step, its GRPO groups, the share
with zero reward variance, the mean reward and the tokens generated. Both are rewritten
atomically at every evaluation, so a killed run keeps the rows up to its last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from anglecurate.generation.graded import groups_with_variance
from anglecurate.piloting.evaluate import evaluate
from anglecurate.storage.atomic import atomic_write_parquet

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


class Recorder:
    """TRL callback state: evaluates and appends a curve row every ``eval_every`` steps."""

    def __init__(
        self, task, arm: str, seed: int, run: Path, curve: pl.DataFrame, steps: pl.DataFrame, progress
    ):
        # task: the pilot's anglecurate.piloting.train.Task (its cfg, spec, held-out rows, reward)
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
