"""The orders a pilot measures with rollouts before it trains: ``calibrated`` and ``pass-rate``.

Both are `anglecurate calibrate` (:mod:`anglecurate.calibration`), run on a copy of the
pilot's angle ranking inside the pilot folder, so a ``--ranking`` the user gave is never
written to::

    P/calibration/calibrated/   the ranking, calibrated on a sample of the training rows
                                stratified over the angle order (--calibrate-sample): the
                                predictor's p_pass for every row
    P/calibration/pass-rate/    the ranking, calibrated on every training row: the measured
                                pass rate of each (the offline filter of AdaRFT and POLARIS)

The rollouts are the training's own: k = ``--num-generations`` completions per prompt, at
most ``--max-completion-length`` tokens, at ``--temperature``, rewarded by the pilot's
reward against its answers, in the rendering the rows are scored and trained in; from the
model before training, seeded by ``--seed-base``. One calibration serves every seed (a user
calibrates once, then trains), so the seeds' spread shows the training's noise, not the
sample's. A rerun reuses finished prompts (calibrate resumes); each run of the arm is
charged the calibration's generated tokens and generation seconds in full (its curve's
``order_tokens`` and ``order_seconds``), since one training needs one calibration.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from anglecurate.piloting.arms import Order, easiest_first

MEASURED = ("calibrated", "pass-rate")
FOLDER = "calibration"
# What a copy of a ranking leaves behind: another command's results and the writer lock.
NOT_COPIED = (
    ".anglecurate-calibrate",
    ".anglecurate-validate",
    "calibrate.*",
    "validate.*",
    ".*.lock",
    "*.tmp-*",
)


def calibration_dir(folder: Path, arm: str) -> Path:
    return Path(folder) / FOLDER / arm


def ranking_copy(ranking_path: Path, dest: Path) -> Path:
    """``dest``: a copy of the finished ranking at ``ranking_path``, made once (atomically,
    by a rename), and made again when the ranking was rescored since (another manifest)."""
    if _same_ranking(Path(ranking_path), dest):  # calibrate's columns change neither key
        return dest
    staging = dest.with_name(f".{dest.name}.copy")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(ranking_path, staging, ignore=shutil.ignore_patterns(*NOT_COPIED))
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


def _calibrate_config(cfg, path: Path, sample: int):
    from anglecurate.calibration.settings import CalibrateConfig

    g = cfg.grpo
    return CalibrateConfig(
        ranking=str(path),
        sample=sample,
        samples_per_prompt=g.num_generations,
        reward=cfg.reward,
        answer_field=cfg.answer_field,
        max_new_tokens=g.max_completion_length,
        temperature=g.temperature,
        seed=cfg.seed_base,
        dtype="bf16" if g.bf16 else "fp32",  # the policy's own precision
    )


def check_measurable(cfg, ranking) -> None:
    """The mistakes a measured arm's calibration would stop at, found before any run starts
    (one line each): its settings, a ranking without stored per-layer values, no answer
    column."""
    from anglecurate.calibration.run import check_layers
    from anglecurate.data.columns import answer_column
    from anglecurate.scoring.store import OutputDir

    _calibrate_config(cfg, ranking.path, cfg.calibrate_sample).validate()
    manifest, parts = OutputDir(ranking.path).ranked_parts()
    columns = pl.scan_parquet(parts).collect_schema().names()
    check_layers(ranking.path, columns, manifest["run"])
    answer_column(cfg.answer_field, columns, str(ranking.path))


def training_rows(ranking, train_uids: list[str]) -> pl.DataFrame:
    """The ranked training rows in rank order: uid (str), row_index (the ranking's input row)."""
    frame = pl.DataFrame({"uid": ranking.uids.cast(pl.String), "row_index": ranking.rows})
    return frame.filter(pl.col("uid").is_in(train_uids))


def reuse_rollouts(folder: Path, arm: str, settings: dict, rows: list[int]) -> int:
    """Copy into ``arm``'s fresh store the finished prompts of ``rows`` that the other
    measured arm already rolled out under the same settings (all but which rows): a row's
    completions are drawn from seeds keyed by the row and the sample's index, so they are
    the ones ``arm`` would draw. Each copied prompt keeps its tokens and seconds, so the arm
    is charged for it all the same. Returns how many were copied."""
    from anglecurate.calibration.rollouts import RolloutStore

    store = RolloutStore(calibration_dir(folder, arm))
    if store.read_settings() is not None:  # a store of its own: calibrate resumes it
        return 0
    ignore = ("rows", "sample", "plan", "scored")
    wanted = {k: v for k, v in settings.items() if k not in ignore}
    for other in (a for a in MEASURED if a != arm):
        source = RolloutStore(calibration_dir(folder, other))
        stored = source.read_settings()
        if stored is None or {k: v for k, v in stored.items() if k not in ignore} != wanted:
            continue
        if not _same_ranking(calibration_dir(folder, other), calibration_dir(folder, arm)):
            continue
        found = source.done(rows)
        store.prompt_dir.mkdir(parents=True, exist_ok=True)
        for record in found.values():
            store.write(record)
        return len(found)
    return 0


def _same_ranking(a: Path, b: Path) -> bool:
    """Two copies of one scoring run (the rollouts of one are the other's)."""
    from anglecurate.storage.atomic import read_json

    first, second = read_json(a / "manifest.json") or {}, read_json(b / "manifest.json") or {}
    return bool(first) and all(first.get(k) == second.get(k) for k in ("run", "created"))


def measure_order(arm: str, cfg, task, ranking, folder: Path, progress, log) -> Order:
    """The order of ``arm`` (one of :data:`MEASURED`): calibrate a copy of ``ranking``
    (resuming), then the training rows easiest first, with what the calibration cost."""
    from anglecurate.calibration.run import calibrate
    from anglecurate.calibration.sample import draw_sample

    train_uids = [row["uid"] for row in task.train_rows]
    rows = training_rows(ranking, train_uids)
    if arm == "calibrated":
        sample = draw_sample(rows.height, cfg.calibrate_sample, cfg.seed_base)
        if sample.note():
            log(f"calibrated: {sample.note().replace('ranked rows', 'ranked training rows')}")
        chosen = rows["row_index"].gather(sample.positions).to_list()
    else:
        chosen = rows["row_index"].to_list()
    path = ranking_copy(ranking.path, calibration_dir(folder, arm))
    settings = _calibrate_config(cfg, path, len(chosen))
    reused = reuse_rollouts(folder, arm, settings.rollout_settings(chosen), chosen)
    log(
        f"{arm}: measuring its order with rollouts into {path}"
        + (f" ({reused} prompts from the other arm's)" if reused else "")
    )
    result = calibrate(settings, progress, log, spec=task.spec, rows=chosen)
    if arm == "calibrated":
        by_row = dict(zip(result.row_index.tolist(), result.fit.p_pass.tolist(), strict=True))
    else:
        measured = result.pass_rates
        by_row = dict(zip(measured["row_index"].to_list(), measured["pass_rate"].to_list(), strict=True))
    uid_of = dict(zip(rows["row_index"].to_list(), rows["uid"].to_list(), strict=True))
    rates = {uid_of[r]: float(v) for r, v in by_row.items() if r in uid_of}
    recorded = result.summary["cost"]["recorded"]
    return Order(
        easiest_first(train_uids, rates),
        closed_loop=True,
        rank_layer=ranking.identity["ranking"].get("layer"),
        tokens=int(recorded["generated_tokens"]),
        seconds=float(recorded["generation_seconds"]),
    )
