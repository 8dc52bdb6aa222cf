"""Epoch schedules from a ranking: open loop up front, or closed loop one epoch at a time.

A schedule folder ``S`` holds::

    S/schedule.parquet   epoch, position, uid, rank: the examples of each epoch, in feed order
    S/state.json         the sampler's initial and current state, the ranking it was drawn
                         from (so a changed ranking is refused), open-loop settings, exports
    S/gainrl_indices.pt  torch.save of a 1-D int64 tensor: input row indices in descending
                         score order, the file the GAIN-RL authors' training scripts load
    S/rows.parquet ...   trainer exports (``anglecurate.scheduling.export``)

Open loop: ``create_schedule`` draws every epoch now. Between epochs the centre moves by a
fixed ``step`` (default: (N - 1) / (epochs - 1), so the window walks the whole ranking from
the highest to the lowest score), or by the GAIN-RL update for an assumed accuracy and
angle. Closed loop: ``update_schedule`` reads the trainer's feedback for the last epoch,
moves the centre by the GAIN-RL rule and appends the next epoch; or the trainer adapters
(``anglecurate.trl``, ``anglecurate.verl``) run the loop in process from ``initial``. The
saved ``sampler`` state is the one after the last draw and before its move, so feedback
applies to it exactly once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams
from anglecurate.scoring.ranking import RankChoice
from anglecurate.scoring.store import OutputDir
from anglecurate.storage.atomic import atomic_write, atomic_write_json, atomic_write_parquet
from anglecurate.storage.lock import exclusive_writer

SCHEDULE_FILE = "schedule.parquet"
STATE_FILE = "state.json"
GAINRL_FILE = "gainrl_indices.pt"
EXPORTS = ("trl", "verl", "openrlhf", "ordered", "adarft", "trinity")


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
    state = Path(path) / STATE_FILE
    if state.is_file() and not (Path(path) / "manifest.json").is_file():
        try:
            drawn_from = f": {json.loads(state.read_text())['ranking']['path']}"
        except (OSError, ValueError, KeyError, TypeError):
            drawn_from = ""
        raise UserError(
            f"{path} is a schedule folder, not a ranking; pass the ranking it was drawn from{drawn_from}"
        )
    manifest, parts = OutputDir(path).ranked_parts()
    if not parts:
        raise UserError(f"ranking {path} has no scored rows")
    frame = pl.scan_parquet(parts).select("rank", "uid", "row_index").collect().sort("rank")
    run = manifest["run"]
    identity = {
        "dataset_fingerprint": run["dataset"]["fingerprint"],
        "model_config_hash": run["model"]["config_hash"],
        "ranking": RankChoice.from_dict(manifest["ranking"]).to_dict(),
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

    indices = torch.tensor(ranking.rows.to_numpy(), dtype=torch.long)
    atomic_write(path, lambda tmp: torch.save(indices, tmp))


@dataclass(frozen=True)
class ScheduleConfig:
    """What `anglecurate schedule` was asked for; ``sampler`` holds explicit hyperparameters
    (None = the authors' default scaled to the ranking's size, see ``SamplerParams.for_size``)."""

    ranking: str
    out: str
    per_epoch: int
    epochs: int = 1
    seed: int = 0
    sampler: dict = field(default_factory=dict)
    step: float | None = None
    assume_accuracy: float | None = None
    assume_angle: float = 0.0
    batch_multiple: int = 1
    exports: tuple[str, ...] = ()
    overwrite: bool = False


def open_loop_move(sampler: GaussianSampler, open_loop: dict) -> None:
    """Move the centre between two open-loop epochs (a fixed step or an assumed accuracy)."""
    if open_loop["assume_accuracy"] is not None:
        sampler.update(open_loop["assume_accuracy"], open_loop["assume_angle"])
    else:
        sampler.shift(open_loop["step"])


def _check(cfg: ScheduleConfig) -> None:
    if cfg.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if cfg.batch_multiple < 1:
        raise UserError("--batch-multiple must be at least 1")
    if cfg.per_epoch % cfg.batch_multiple:
        lower = cfg.per_epoch // cfg.batch_multiple * cfg.batch_multiple
        raise UserError(
            f"--per-epoch {cfg.per_epoch} is not a multiple of --batch-multiple {cfg.batch_multiple}, so "
            f"the trainer would drop a partial batch each epoch; use {lower or cfg.batch_multiple} "
            f"or {lower + cfg.batch_multiple}"
        )
    unknown = sorted(set(cfg.exports) - set(EXPORTS))
    if unknown:
        raise UserError(f"unknown --export {unknown[0]!r}; choose from {', '.join(EXPORTS)}")
    if cfg.step is not None and cfg.assume_accuracy is not None:
        raise UserError("use either --step or --assume-accuracy, not both")
    folder = Path(cfg.out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; pass a folder path")
    if folder.resolve() == Path(cfg.ranking).resolve():
        raise UserError(
            f"--out {folder} is the ranking folder; write the schedule to a folder of its own "
            f"(e.g. --out {folder.name}-schedule)"
        )
    if (folder / STATE_FILE).exists() and not cfg.overwrite:
        raise UserError(
            f"{folder} already holds a schedule; pass --overwrite to replace it, or "
            "use `anglecurate schedule update` to extend it"
        )


def create_schedule(cfg: ScheduleConfig) -> tuple[pl.DataFrame, SamplerParams]:
    """Draw ``cfg.epochs`` epochs open loop into folder ``cfg.out``; returns the schedule and
    the sampler's hyperparameters (after scaling to the ranking's size)."""
    _check(cfg)
    with exclusive_writer(cfg.out):
        return _create_schedule(cfg)


def _create_schedule(cfg: ScheduleConfig) -> tuple[pl.DataFrame, SamplerParams]:
    ranking = load_ranking(cfg.ranking)
    params = SamplerParams.for_size(ranking.size, **cfg.sampler)
    sampler = GaussianSampler(ranking.size, cfg.per_epoch, params, cfg.seed)
    step = cfg.step
    if step is None and cfg.assume_accuracy is None:
        step = (ranking.size - 1) / max(cfg.epochs - 1, 1)
    open_loop = {"step": step, "assume_accuracy": cfg.assume_accuracy, "assume_angle": cfg.assume_angle}
    initial = sampler.state_dict()
    frames = []
    for epoch in range(cfg.epochs):
        if epoch:
            open_loop_move(sampler, open_loop)
        frames.append(_epoch_frame(epoch, sampler.next_epoch(), ranking))
    # The move after the last epoch waits for feedback (update) or the trainer's curriculum.
    schedule = pl.concat(frames)
    folder = Path(cfg.out)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "initial": initial,
        "sampler": sampler.state_dict(),
        "ranking": {"path": str(ranking.path.resolve()), **ranking.identity},
        "open_loop": open_loop,
        "batch_multiple": cfg.batch_multiple,
        "exports": sorted(set(cfg.exports)),
    }
    _write(folder, schedule, state, ranking)
    write_gainrl_indices(ranking, folder / GAINRL_FILE)
    return schedule, params


def _write(folder: Path, schedule: pl.DataFrame, state: dict, ranking: Ranking) -> None:
    from anglecurate.scheduling.export import write_exports

    # Exports first, state last: a crash in between leaves the previous state, and the
    # next update rewrites every export from it.
    write_exports(folder, schedule, ranking, state["exports"])
    atomic_write_parquet(schedule, folder / SCHEDULE_FILE)
    atomic_write_json(state, folder / STATE_FILE)


def load_schedule(folder: str | Path) -> tuple[dict, Ranking]:
    """A schedule folder's state and the ranking it was drawn from (refused if it changed)."""
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
    return state, ranking


def read_feedback(
    path: str | Path, reward_min: float, reward_max: float, epoch: pl.DataFrame | None = None
) -> tuple[float, float]:
    """Mean accuracy in [0, 1] and mean angle from a feedback file (JSONL, JSON or Parquet).

    Per-example rows have ``reward`` (normalised as (reward - reward_min) / (reward_max -
    reward_min), then clipped to [0, 1]), optionally ``uid`` (checked against ``epoch``, the
    schedule's last epoch, so feedback for another dataset or epoch is refused) and
    ``angle``; a per-epoch file has one row with ``accuracy`` (already in [0, 1]).
    """
    from anglecurate.data.dataset import open_dataset

    if not reward_max > reward_min:
        raise UserError(f"--reward-max ({reward_max}) must exceed --reward-min ({reward_min})")
    if not Path(path).is_file():  # a local file: never a --data spec, never looked up on the hub
        what = "is not a file" if Path(path).exists() else "not found"
        raise UserError(
            f"--feedback {path} {what}; pass the JSONL, JSON or Parquet file of the epoch's rewards"
        )
    ds = open_dataset(path)
    frame = pl.concat([f for _, f in ds.iter_chunks(1 << 16)])
    column = next((c for c in ("reward", "accuracy") if c in frame.columns), None)
    if column is None:
        raise UserError(
            f"{path} has neither a 'reward' column (per example) nor an 'accuracy' "
            f"column (per epoch); it has {frame.columns}"
        )
    if epoch is not None and "uid" in frame.columns:
        expected = set(epoch["uid"].cast(pl.String).to_list())
        stray = [u for u in frame["uid"].cast(pl.String).unique().to_list() if u not in expected]
        if stray:
            raise UserError(
                f"{path} has {len(stray)} uids that the schedule's last epoch does not hold "
                f"(e.g. {stray[0]!r}); pass the feedback of that epoch"
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
    """Apply one epoch's feedback and append the next epoch; returns (new epoch, summary)."""
    folder = Path(folder)
    with exclusive_writer(folder, create=False):
        return _update_schedule(folder, feedback, reward_min, reward_max)


def _update_schedule(
    folder: Path, feedback: str | Path, reward_min: float, reward_max: float
) -> tuple[pl.DataFrame, dict]:
    state, ranking = load_schedule(folder)
    schedule = pl.read_parquet(folder / SCHEDULE_FILE)
    last = int(schedule["epoch"].max())
    last_epoch = schedule.filter(pl.col("epoch") == last)
    accuracy, angle = read_feedback(feedback, reward_min, reward_max, last_epoch)
    sampler = GaussianSampler.from_state_dict(state["sampler"])
    sampler.update(accuracy, angle)
    new = _epoch_frame(last + 1, sampler.next_epoch(), ranking)
    state["sampler"] = sampler.state_dict()
    _write(folder, pl.concat([schedule, new]), state, ranking)
    summary = {"epoch": last + 1, "accuracy": accuracy, "angle": angle, "mu": sampler.mu}
    return new, {**summary, "params": asdict(sampler.params)}
