"""What a pilot runs: its settings, and the train / held-out split it runs them on.

A pilot folder ``P`` holds::

    P/config.json         the settings below (a rerun with other settings is refused)
    P/data/train.parquet  the training rows: uid, the prompt field, the answer field, ...
    P/data/eval.parquet   the held-out rows, never trained on
    P/ranking/            the angle ranking of the training rows (unless --ranking was given)
    P/calibration/ARM/    the calibrated and pass-rate arms' rollouts: a calibrated copy of
                          the ranking each (anglecurate.piloting.measured)
    P/runs/ARM-seedS/     one folder per (arm, seed): curve.parquet, checkpoints, done.json
    P/pilot.parquet, P/pilot.json, P/pilot.png   the results (docs/pilot.md)

The split is a seeded permutation of the input's rows, so a rerun holds out the same rows.

Each optimizer step trains on ``prompts_per_step x num_generations`` completions, computed in
micro-batches of whole completions under a token budget (:func:`train_micro_batch`), the
gradients accumulated inside TRL: memory is bounded by the micro-batch, not by the step.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.sources.builtin import builtin_id_field
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet

ARMS = ("uniform", "gainrl", "gainrl-open", "length", "reverse", "calibrated", "pass-rate")
DEFAULT_ARMS = ("uniform", "gainrl", "length")
CONFIG_FILE = "config.json"
SPLIT_SEED = 1234  # the held-out split does not move with --seed-base
# Tokens (completions x their longest sequence) one training forward and backward holds,
# by device, when --max-train-tokens is not given: score's --max-batch-tokens defaults. With
# 2048 on CPU, the default SmolLM2 pilot peaks at 6.53 GiB resident (docs/pilot.md), most of
# it the model's optimizer state and the generation batch; a GPU holds more and wants more.
DEFAULT_TRAIN_TOKENS = {"cpu": 2048, "cuda": 16384}
MIN_CALIBRATE_SAMPLE = 10  # two rows for each of calibrate's 5 held-out folds


@dataclass(frozen=True)
class GRPOOptions:
    """What passes through to TRL's ``GRPOConfig`` (the same for every arm)."""

    num_generations: int = 8
    prompts_per_step: int = 8
    max_completion_length: int = 256
    learning_rate: float = 1e-6
    temperature: float = 1.0
    beta: float = 0.0
    bf16: bool = False
    use_vllm: bool = False
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class PilotConfig:
    model: str
    data: str
    field: str
    answer_field: str
    out: str
    id_field: str | None = None
    split: str = "train"
    data_config: str | None = None
    ranking: str | None = None
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: int = 3
    seed_base: int = 0
    steps: int = 60
    eval_every: int = 10
    eval_rows: int = 200
    eval_data: str | None = None
    eval_temperature: float = 0.0  # 0: greedy
    train_rows: int | None = None  # cap on training rows (after the hold-out)
    reward: str = "number"
    per_epoch: int | None = None  # GAIN-RL epoch size; default prompts_per_step * eval_every
    max_train_tokens: int | None = None  # micro-batch budget; None: DEFAULT_TRAIN_TOKENS by device
    # The rendering every row is scored, trained and evaluated in (`score --prompt-config`).
    # None: the bare question as one user turn, or a given --ranking's own rendering.
    prompt_config: str | None = None
    calibrate_sample: int = 256  # the calibrated arm's rollout sample (DOTS's reference set size)
    grpo: GRPOOptions = field(default_factory=GRPOOptions)

    def __post_init__(self) -> None:
        if self.id_field is None:  # builtin:arithmetic: its own uid column, as `score` takes it
            object.__setattr__(self, "id_field", builtin_id_field(self.data))

    @property
    def epoch_prompts(self) -> int:
        return self.per_epoch or self.grpo.prompts_per_step * self.eval_every

    def validate(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise UserError(f"unknown arm {unknown[0]!r}; arms: {', '.join(ARMS)}")
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise UserError("--arms must name each arm once, e.g. uniform,gainrl,length")
        for name in ("seeds", "steps", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if "calibrated" in self.arms and self.calibrate_sample < MIN_CALIBRATE_SAMPLE:
            raise UserError(
                f"--calibrate-sample {self.calibrate_sample}: the predictor's held-out folds need at "
                f"least {MIN_CALIBRATE_SAMPLE} rows (256 is the default)"
            )
        if self.max_train_tokens is not None and self.max_train_tokens < 1:
            raise UserError("--max-train-tokens must be at least 1")
        if self.eval_data is None and self.eval_rows < 1:
            raise UserError("--eval-rows must be at least 1 (or pass --eval-data)")
        g = self.grpo
        if g.num_generations < 2:
            raise UserError("--num-generations must be at least 2: GRPO compares completions of a prompt")
        if g.prompts_per_step < 1 or g.max_completion_length < 1 or not g.learning_rate > 0:
            raise UserError(
                "--prompts-per-step, --max-completion-length and --learning-rate must be positive"
            )
        if self.epoch_prompts % g.prompts_per_step:
            raise UserError(f"--per-epoch {self.epoch_prompts} must be a multiple of --prompts-per-step")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["arms"] = list(self.arms)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PilotConfig:
        data = dict(data)
        data["arms"] = tuple(data["arms"])
        data["grpo"] = GRPOOptions(**data["grpo"])
        return cls(**data)

    def study(self) -> dict:
        """The settings that define the experiment: the same study may add arms or seeds.

        ``max_train_tokens`` is not one of them: it splits each step's completions into
        micro-batches without changing the step (the same gradient to float tolerance), so a
        run stopped by an out-of-memory error resumes with a smaller budget."""
        data = self.to_dict()
        for key in ("arms", "seeds", "out", "max_train_tokens"):
            data.pop(key)
        return data


def train_budget(max_train_tokens: int | None, device_type: str) -> int:
    """The micro-batch token budget: the option, else the device's default."""
    if max_train_tokens is not None:
        return max_train_tokens
    return DEFAULT_TRAIN_TOKENS.get(device_type, DEFAULT_TRAIN_TOKENS["cuda"])


def train_micro_batch(completions_per_step: int, sequence_tokens: int, budget: int) -> int:
    """Completions per training forward and backward: the largest divisor of
    ``completions_per_step`` (prompts x generations) whose ``micro x sequence_tokens`` fits
    ``budget``; 1 when not even one sequence fits (one is the least a step can run).

    A divisor, so every step is the same whole number of equal micro-batches: TRL splits
    one generation batch into ``steps_per_generation`` equal slices."""
    if completions_per_step < 1 or sequence_tokens < 1:
        raise ValueError("completions_per_step and sequence_tokens must be positive")
    fits = max(budget // sequence_tokens, 1)
    return max(d for d in range(1, min(fits, completions_per_step) + 1) if completions_per_step % d == 0)


# Settings the split and the ranking are made from: changed before any run started, those
# derived folders are rebuilt; the others only shape the runs.
SPLIT_KEYS = ("data", "split", "data_config", "field", "answer_field", "id_field", "eval_rows", "eval_data")
RANKING_KEYS = (*SPLIT_KEYS, "train_rows", "model", "ranking", "prompt_config")
# ... and the rollouts the measured arms' orders come from (the GRPO options set k, the
# length and the temperature).
CALIBRATION_KEYS = (*RANKING_KEYS, "reward", "seed_base", "calibrate_sample", "grpo")


def check_config(cfg: PilotConfig, folder: Path) -> None:
    """Refuse to mix runs of another study into ``folder``; record the settings otherwise.

    Before any run has started (a first attempt that was killed, say), other settings are
    taken as a correction: the split and ranking they change are rebuilt. (A start that
    stopped at a mistake left nothing: :func:`discard_start`.)"""
    path = folder / CONFIG_FILE
    if path.is_file():
        previous = PilotConfig.from_dict(json.loads(path.read_text())).study()
        changed = [k for k, v in cfg.study().items() if previous.get(k) != v]
        if changed and (folder / "runs").is_dir():
            raise UserError(
                f"{folder} holds a pilot with other settings ({', '.join(changed)}); pass another --out "
                "or the same settings to resume it"
            )
        if set(changed) & set(RANKING_KEYS):
            shutil.rmtree(folder / "ranking", ignore_errors=True)
        if set(changed) & set(CALIBRATION_KEYS):
            shutil.rmtree(folder / "calibration", ignore_errors=True)
        if set(changed) & {*SPLIT_KEYS, "train_rows"}:
            shutil.rmtree(folder / "data", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.to_dict(), path)


def discard_start(folder: Path) -> None:
    """Undo a start that failed before any run began: the settings, split and ranking it
    wrote go, so the folder holds nothing of it (and the lock, released, removes a folder it
    created). Once a run has begun, they describe that study and stay."""
    if (folder / "runs").is_dir():
        return
    (folder / CONFIG_FILE).unlink(missing_ok=True)
    for name in ("data", "ranking", "calibration"):
        shutil.rmtree(folder / name, ignore_errors=True)


@dataclass(frozen=True)
class Split:
    train: pl.DataFrame  # uid (str) + the input's columns
    eval: pl.DataFrame
    train_path: Path
    eval_path: Path


def _read(spec: str, cfg: PilotConfig, option: str) -> pl.DataFrame:
    from anglecurate.data.dataset import open_dataset

    dataset = open_dataset(spec, cfg.split, cfg.data_config)
    for column, flag in ((cfg.field, "--field"), (cfg.answer_field, "--answer-field")):
        if column not in dataset.columns:
            raise UserError(f"{option} {spec} has no column {column!r} ({flag}); columns: {dataset.columns}")
    if cfg.id_field and cfg.id_field not in dataset.columns:
        raise UserError(f"{option} {spec} has no column {cfg.id_field!r} (--id-field)")
    frame = pl.concat([chunk for _, chunk in dataset.iter_chunks(4096)], how="vertical_relaxed")
    # uid as `score` assigns it (the id field, else the row index), so a ranking scored on the
    # whole file matches the training rows
    uids = (
        frame[cfg.id_field].cast(pl.String)
        if cfg.id_field
        else pl.Series(np.arange(frame.height).astype(str))
    )
    if "uid" in frame.columns and cfg.id_field != "uid":
        frame = frame.rename({"uid": "uid_input"})
    frame = frame.with_columns(uids.alias("uid"))
    if frame["uid"].null_count() or frame["uid"].n_unique() != frame.height:
        raise UserError(f"{option} {spec}: the uids ({cfg.id_field or 'uid'}) must be unique and not null")
    return frame


def prepare_split(cfg: PilotConfig, folder: Path) -> Split:
    """The training and held-out rows, written once to ``folder/data`` and read back after."""
    data = folder / "data"
    train_path, eval_path = data / "train.parquet", data / "eval.parquet"
    if train_path.is_file() and eval_path.is_file():
        return Split(pl.read_parquet(train_path), pl.read_parquet(eval_path), train_path, eval_path)
    frame = _read(cfg.data, cfg, "--data")
    if cfg.eval_data is not None:
        held = _read(cfg.eval_data, cfg, "--eval-data")
        train = frame
    else:
        if cfg.eval_rows >= frame.height:
            raise UserError(f"--eval-rows {cfg.eval_rows} leaves no training row of the {frame.height}")
        order = np.random.Generator(np.random.PCG64(SPLIT_SEED)).permutation(frame.height)
        held = frame[np.sort(order[: cfg.eval_rows]).tolist()]
        train = frame[np.sort(order[cfg.eval_rows :]).tolist()]
    if cfg.train_rows is not None:
        train = train.head(cfg.train_rows)
    if train.height < cfg.epoch_prompts:
        raise UserError(
            f"{train.height} training rows are fewer than one GAIN-RL epoch ({cfg.epoch_prompts})"
        )
    data.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(train, train_path)
    atomic_write_parquet(held, eval_path)
    return Split(train, held, train_path, eval_path)
