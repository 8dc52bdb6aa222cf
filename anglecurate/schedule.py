"""Epoch schedules from a ranking: open loop up front, or closed loop one epoch at a time.

A schedule folder ``S`` holds::

    S/schedule.parquet   epoch, position, uid, rank: the examples of each epoch, in feed order
    S/state.json         the sampler's full state and hyperparameters, and the ranking it
                         was drawn from (so an update can refuse a foreign ranking)
    S/gainrl_indices.pt  torch.save of a 1-D int64 tensor: input row indices in descending
                         score order, the file the GAIN-RL authors' training scripts load

Open loop: ``create`` draws every epoch now. Between epochs the centre moves by a fixed
``step`` (default: (N - 1) / (epochs - 1), so the window walks the whole ranking from the
highest to the lowest score), or by the GAIN-RL update for an assumed accuracy and angle.
Closed loop: ``create --epochs 1`` draws the first epoch; after each training epoch,
``update`` reads the trainer's feedback, moves the centre by the GAIN-RL rule and appends
the next epoch. The state saved after the last drawn epoch is the sampler *before* that
epoch's move, so feedback applies to it exactly once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from anglecurate.errors import UserError
from anglecurate.sampler import GaussianSampler, SamplerParams
from anglecurate.store import OutputDir, atomic_write_json, atomic_write_parquet

SCHEDULE_FILE = "schedule.parquet"
STATE_FILE = "state.json"
GAINRL_FILE = "gainrl_indices.pt"


@dataclass(frozen=True)
class Ranking:
    """The ranked uids of a finished `score` run, and what identifies that ranking."""

    path: Path
    uids: pl.Series  # uid at each rank, rank 0 first
    rows: pl.Series  # input row index at each rank
    identity: dict

    @property
    def size(self) -> int:
        return self.uids.len()


def load_ranking(path: str | Path) -> Ranking:
    manifest, parts = OutputDir(path).ranked_parts()
    if not parts:
        raise UserError(f"ranking {path} has no scored rows")
    frame = pl.scan_parquet(parts).select("rank", "uid", "row_index").collect().sort("rank")
    run = manifest["run"]
    identity = {
        "dataset_fingerprint": run["dataset"]["fingerprint"],
        "model_config_hash": run["model"]["config_hash"],
        "rank_layer": run["rank_layer"],
        "weights": run["weights"],
        "rows": frame.height,
    }
    return Ranking(Path(path), frame["uid"], frame["row_index"], identity)


def _epoch_frame(epoch: int, ranks, ranking: Ranking) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "epoch": pl.Series([epoch] * len(ranks), dtype=pl.Int64),
            "position": pl.Series(range(len(ranks)), dtype=pl.Int64),
            "uid": ranking.uids.gather(ranks),
            "rank": pl.Series(ranks, dtype=pl.Int64),
        }
    )


def write_gainrl_indices(ranking: Ranking, path: Path) -> None:
    """The authors' format: ``torch.argsort(scores, descending=True)`` over input rows."""
    import torch  # only here: the rest of scheduling needs no torch

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(torch.tensor(ranking.rows.to_numpy(), dtype=torch.long), tmp)
    os.replace(tmp, path)


def _write(
    folder: Path, frame: pl.DataFrame, sampler: GaussianSampler, ranking: Ranking, open_loop: dict | None
) -> None:
    atomic_write_parquet(frame, folder / SCHEDULE_FILE)
    atomic_write_json(
        {
            "sampler": sampler.state_dict(),
            "ranking": {"path": str(ranking.path.resolve()), **ranking.identity},
            "open_loop": open_loop,
        },
        folder / STATE_FILE,
    )


def create_schedule(
    ranking_path: str | Path,
    out: str | Path,
    epochs: int,
    per_epoch: int,
    seed: int = 0,
    params: SamplerParams | None = None,
    step: float | None = None,
    assume_accuracy: float | None = None,
    assume_angle: float = 0.0,
    overwrite: bool = False,
) -> pl.DataFrame:
    """Draw ``epochs`` epochs open loop into folder ``out``; returns the schedule."""
    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; pass a folder path")
    if (folder / STATE_FILE).exists() and not overwrite:
        raise UserError(
            f"{folder} already holds a schedule; pass --overwrite to replace it, or "
            "use `anglecurate schedule update` to extend it"
        )
    if step is not None and assume_accuracy is not None:
        raise UserError("use either --step or --assume-accuracy, not both")
    ranking = load_ranking(ranking_path)
    params = params or SamplerParams()
    sampler = GaussianSampler(ranking.size, per_epoch, params, seed)
    if step is None and assume_accuracy is None:
        step = (ranking.size - 1) / max(epochs - 1, 1)
    frames = []
    for epoch in range(epochs):
        frames.append(_epoch_frame(epoch, sampler.next_epoch(), ranking))
        if epoch == epochs - 1:
            break  # the last epoch's move waits for feedback (or the next create)
        if assume_accuracy is not None:
            sampler.update(assume_accuracy, assume_angle)
        else:
            sampler.shift(step)
    schedule = pl.concat(frames)
    folder.mkdir(parents=True, exist_ok=True)
    open_loop = {"step": step, "assume_accuracy": assume_accuracy, "assume_angle": assume_angle}
    _write(folder, schedule, sampler, ranking, open_loop)
    write_gainrl_indices(ranking, folder / GAINRL_FILE)
    return schedule


def read_feedback(path: str | Path, reward_min: float, reward_max: float) -> tuple[float, float]:
    """Mean accuracy in [0, 1] and mean angle from a feedback file (JSONL, JSON or Parquet).

    Per-example rows have ``reward`` (normalised as (reward - reward_min) / (reward_max -
    reward_min), then clipped to [0, 1]) and optionally ``angle``; a per-epoch file has one
    row with ``accuracy`` (already in [0, 1]) and optionally ``angle``.
    """
    from anglecurate.dataset import open_dataset

    if not reward_max > reward_min:
        raise UserError(f"--reward-max ({reward_max}) must exceed --reward-min ({reward_min})")
    ds = open_dataset(path)
    frame = pl.concat([f for _, f in ds.iter_chunks(1 << 16)])
    column = next((c for c in ("reward", "accuracy") if c in frame.columns), None)
    if column is None:
        raise UserError(
            f"{path} has neither a 'reward' column (per example) nor an 'accuracy' "
            f"column (per epoch); it has {frame.columns}"
        )
    values = frame[column].cast(pl.Float64)
    if values.null_count():
        raise UserError(f"{path} has empty {column} values; drop those rows or fill them")
    if column == "reward":  # normalise explicitly: a 0/2 reward is not an accuracy
        values = ((values - reward_min) / (reward_max - reward_min)).clip(0, 1)
    accuracy = float(values.mean())
    angle = float(frame["angle"].mean()) if "angle" in frame.columns else 0.0
    return accuracy, angle


def update_schedule(
    folder: str | Path, feedback: str | Path, reward_min: float = 0.0, reward_max: float = 1.0
) -> tuple[pl.DataFrame, dict]:
    """Apply one epoch's feedback and append the next epoch; returns (new epoch, state)."""
    folder = Path(folder)
    state_path = folder / STATE_FILE
    if not state_path.exists():
        raise UserError(f"{folder} holds no schedule; create one with `anglecurate schedule`")
    state = json.loads(state_path.read_text())
    ranking = load_ranking(state["ranking"]["path"])
    saved = {k: v for k, v in state["ranking"].items() if k != "path"}
    if saved != ranking.identity:
        raise UserError(
            f"the ranking at {ranking.path} changed since the schedule was made "
            "(rescored or re-ranked); create a new schedule"
        )
    accuracy, angle = read_feedback(feedback, reward_min, reward_max)
    sampler = GaussianSampler.from_state_dict(state["sampler"])
    sampler.update(accuracy, angle)
    schedule = pl.read_parquet(folder / SCHEDULE_FILE)
    epoch = int(schedule["epoch"].max()) + 1
    new = _epoch_frame(epoch, sampler.next_epoch(), ranking)
    _write(folder, pl.concat([schedule, new]), sampler, ranking, state.get("open_loop"))
    return new, {
        "epoch": epoch,
        "accuracy": accuracy,
        "angle": angle,
        "mu": sampler.mu,
        "params": asdict(sampler.params),
    }
