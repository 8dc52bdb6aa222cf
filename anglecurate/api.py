"""The Python API: ``import anglecurate as ac``; the command line is a thin layer over it.

Each function takes the matching command's options as keyword arguments (``--w-inter 8``
is ``w_inter=8``), returns a result object, and raises :class:`anglecurate.UserError` with
the one-line message the command prints. No progress bar is drawn unless
``progress=True``::

    import anglecurate as ac

    ranked = ac.score(model="Qwen/Qwen2.5-0.5B-Instruct", data="data/", out="ranked")
    sched = ac.schedule(ranking="ranked", out="sched", per_epoch=1024, export=["trl"])
    rows = ac.read_ranking("ranked").head(10).collect()
    verdict = ac.pilot(model="builtin:smollm2", data="builtin:arithmetic", field="problem",
                       answer_field="answer", out="pilot").verdict
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.base.progress import RowProgress
from anglecurate.scoring.result import ScoreResult

if TYPE_CHECKING:
    from anglecurate.calibration.run import CalibrateResult
    from anglecurate.reporting.write import ReportResult
# Result classes whose modules load scipy and matplotlib (about a second): imported on first
# use, so every command that does not calibrate or report starts without them.
LAZY_RESULTS = {
    "CalibrateResult": "anglecurate.calibration.run",
    "ReportResult": "anglecurate.reporting.write",
}


def __getattr__(name: str):
    if name in LAZY_RESULTS:
        import importlib

        return getattr(importlib.import_module(LAZY_RESULTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SCHEDULE_SAMPLER = ("n", "alpha", "beta", "adj_min", "adj_max", "sigma", "mu0", "shuffle")


@dataclass
class ValidateResult:
    """What `validate` wrote (``ranking/validate.json`` and ``.parquet``) and found."""

    ranking: Path
    report: dict  # the content of validate.json

    @property
    def json_path(self) -> Path:
        return self.ranking / "validate.json"

    @property
    def parquet_path(self) -> Path:
        return self.ranking / "validate.parquet"

    @property
    def recommendation(self) -> dict | None:
        return self.report.get("recommendation")


@dataclass
class ScheduleResult:
    """A schedule folder and what was drawn into it."""

    out: Path
    epochs: int
    per_epoch: int
    exports: list[str]
    sampler: dict  # the sampler's hyperparameters after scaling to the ranking's size
    frame: pl.DataFrame  # epoch, position, uid, rank
    warnings: list[str] = dataclasses.field(default_factory=list)  # one line each


@dataclass
class UpdateResult:
    """One closed-loop step: the epoch appended and the feedback that moved the window."""

    out: Path
    epoch: int
    accuracy: float
    angle: float
    mu: float
    frame: pl.DataFrame


def _progress(enabled: bool) -> RowProgress:
    return RowProgress(enabled=enabled, bar=sys.stderr.isatty())


def _names(values: str | Sequence[str]) -> list[str]:
    """A repeatable option's values: each may be a comma list (``"trl,verl"``); blanks
    dropped, repeats kept once, in the order first given."""
    parts = [values] if isinstance(values, str) else list(values)
    return list(dict.fromkeys(v.strip() for part in parts for v in str(part).split(",") if v.strip()))


def _options(function, *classes, internal: tuple[str, ...] = ()) -> list[str]:
    """Every keyword ``function`` takes: its own parameters and the fields of the config
    classes its ``**options`` fill (less ``internal`` ones it builds itself), so the list an
    error offers is never hand-kept."""
    params = inspect.signature(function).parameters.values()
    names = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    names |= {f.name for cls in classes for f in dataclasses.fields(cls)}
    return sorted(names - set(internal))


def _refuse_unknown(function, options: dict, valid: list[str]) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(
            f"{function.__name__}() got an unknown option {unknown[0]!r}; options: {', '.join(valid)}"
        )


def _config(cls, function, **options):
    """``cls(**options)`` for ``function``'s ``**options``, with an unknown one named in one
    line that lists every keyword ``function`` takes."""
    _refuse_unknown(function, options, _options(function, cls))
    return cls(**options)


def score(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    shard: str | None = None,
    devices: str | None = None,
    engine: str = "local",
    num_workers: int = 2,
    ray_address: str | None = None,
    progress: bool = False,
    **options,
) -> ScoreResult:
    """Score every prompt of ``data`` with ``model`` into the folder ``out`` (a rerun resumes).

    ``model``: a local model folder, a ``.gguf`` file, ``builtin:smollm2`` or a hub id
    (``revision=``); ``data``: a file, a folder or glob of shards, a ``save_to_disk`` folder,
    ``builtin:humaneval`` or a hub dataset id (``split=``, ``data_config=``). ``options``:
    every field of :class:`anglecurate.scoring.config.ScoreConfig` (``field``, ``layers``,
    ``w_inter``, ``dtype``, ...). ``shard="i/N"`` scores one shard; ``devices="0,1"`` one
    shard per device, then merges; ``engine="ray"`` spreads chunks over Ray actors.
    """
    from anglecurate.data.shard import parse_shard
    from anglecurate.scoring.config import ScoreConfig

    if engine not in ("local", "ray"):
        raise UserError(f"--engine {engine!r}: choose local or ray")
    options["shard"] = parse_shard(shard)
    cfg = _config(ScoreConfig, score, model=str(model), data=str(data), out=str(out), **options)
    if devices is not None:
        if shard is not None or engine == "ray":
            raise UserError("--devices runs its own shards; drop --shard and --engine ray")
        return _score_on_devices(cfg, devices)
    with _progress(progress) as bar:
        if engine == "ray":
            from anglecurate.scale.cluster import score_on_ray

            return score_on_ray(cfg, num_workers, ray_address, bar)
        from anglecurate.scoring.pipeline import score as run_score

        return run_score(cfg, bar)


def _score_on_devices(cfg, devices: str) -> ScoreResult:
    from anglecurate.scale.launch import score_on_devices

    return score_on_devices(cfg, devices)


def merge(out: str | Path) -> ScoreResult:
    """Build the global ranking of a sharded run once every shard finished."""
    from anglecurate.scoring.merge import merge as merge_shards

    return merge_shards(out)


def rank(
    out: str | Path,
    *,
    layer: int | None = None,
    w_intra: float | None = None,
    w_inter: float | None = None,
    metric: str | None = None,
    length_control: bool | None = None,
    nan_policy: str | None = None,
    from_validate: bool = False,
    by: str | None = None,
    ascending: bool | None = None,
) -> ScoreResult:
    """Rank a scored folder again from its stored columns, without the model. Options left
    at None keep the folder's current choice.

    ``by``: what orders the rows: ``"score"`` (the angle score, highest first),
    ``"learnability"`` and ``"p_pass"`` (highest first: p_pass walks easiest first; written
    by calibrate), ``"length"`` (n_question, shortest first) or any numeric column (highest
    first). ``ascending=True`` walks lowest first, ``False`` highest first."""
    from anglecurate.scoring.rerank import choose, rerank

    given = {"metric": metric, "layer": layer, "w_intra": w_intra, "w_inter": w_inter}
    given |= {"length_control": length_control, "nan_policy": nan_policy, "by": by, "ascending": ascending}
    choice = choose(out, {k: v for k, v in given.items() if v is not None}, from_validate)
    return rerank(out, choice)


def validate(ranking: str | Path, *, progress: bool = False, **options) -> ValidateResult:
    """Measure real gradients on a sample of ``ranking`` and whether the signal holds.
    ``options``: the fields of :class:`anglecurate.evidence.validate.ValidateConfig`."""
    from anglecurate.evidence.validate import ValidateConfig, run_validation

    cfg = _config(ValidateConfig, validate, ranking=str(ranking), **options)
    with _progress(progress) as bar:
        report = run_validation(cfg, bar)
    return ValidateResult(Path(ranking), report)


def calibrate(
    ranking: str | Path,
    *,
    progress: bool = False,
    log=None,
    model=None,
    rows: Sequence[int] | None = None,
    **options,
) -> CalibrateResult:
    """Measure pass rates with rollouts on a sample of ``ranking`` (k completions per prompt,
    in the rendering the rows were scored in), fit the learnability predictor, and add
    ``p_pass`` and ``learnability`` to every ranked row (the order is kept; rank by them with
    ``rank(ranking, by="p_pass")``). A rerun with the same settings resumes. ``options``: the
    fields of :class:`anglecurate.calibration.settings.CalibrateConfig` (``sample``,
    ``samples_per_prompt``, ``reward``, ``answer_field``, ``max_new_tokens``, ``temperature``,
    ``seed``, ...). ``log``: a function given each line the command prints before and while
    it runs (the cost); ``model``: a loaded causal LM to generate with instead of the one
    that scored; ``rows``: input rows (``row_index``) to roll out instead of the sample."""
    from anglecurate.calibration.run import calibrate as run_calibrate
    from anglecurate.calibration.settings import CalibrateConfig

    cfg = _config(CalibrateConfig, calibrate, ranking=str(ranking), **options)
    with _progress(progress) as bar:
        return run_calibrate(cfg, bar, log, model=model, rows=rows)


def report(
    ranking: str | Path,
    *,
    by: Sequence[str] = (),
    out: str | Path | None = None,
    sample: int | None = None,
    pilot: str | Path | None = None,
) -> ReportResult:
    """Write the HTML report of ``ranking`` (default ``ranking/report/report.html``), with a
    breakdown by each ``by`` column (a list, or comma lists: ``"level,type"``); with
    ``pilot`` (or when ``ranking`` is a pilot's own ``P/ranking``) it shows the pilot's verdict."""
    from anglecurate.reporting.write import write_report

    return write_report(ranking, out, _names(by), sample, pilot)


def schedule(
    ranking: str | Path,
    out: str | Path,
    per_epoch: int,
    *,
    epochs: int = 1,
    seed: int = 0,
    step: float | None = None,
    assume_accuracy: float | None = None,
    assume_angle: float = 0.0,
    batch_multiple: int = 1,
    export: Sequence[str] = (),
    overwrite: bool = False,
    **sampler,
) -> ScheduleResult:
    """Draw ``epochs`` epochs of ``per_epoch`` prompts from ``ranking`` into the folder
    ``out``, with trainer exports (``export=["trl", "verl", "openrlhf"]``, or ``"trl,verl"``). ``sampler``:
    GAIN-RL's hyperparameters ``n``, ``alpha``, ``beta``, ``adj_min``, ``adj_max``,
    ``sigma``, ``mu0``, ``shuffle`` (unset: the authors' defaults scaled to the ranking)."""
    from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule

    export = _names(export)
    _refuse_unknown(schedule, sampler, sorted({*_options(schedule), *SCHEDULE_SAMPLER}))
    cfg = ScheduleConfig(
        ranking=str(ranking),
        out=str(out),
        per_epoch=per_epoch,
        epochs=epochs,
        seed=seed,
        sampler={k: sampler.get(k) for k in SCHEDULE_SAMPLER if k != "shuffle"}
        | {"shuffle": bool(sampler.get("shuffle", False))},
        step=step,
        assume_accuracy=assume_accuracy,
        assume_angle=assume_angle,
        batch_multiple=batch_multiple,
        exports=tuple(export),
        overwrite=overwrite,
    )
    from anglecurate.scheduling.export import prompt_mismatch

    frame, params = create_schedule(cfg)
    epochs_drawn = frame["epoch"].n_unique()
    warnings = [w for w in [prompt_mismatch(Path(ranking))] if w] if export else []
    return ScheduleResult(
        Path(out), epochs_drawn, per_epoch, export, dataclasses.asdict(params), frame, warnings
    )


def schedule_update(
    schedule: str | Path, feedback: str | Path, *, reward_min: float = 0.0, reward_max: float = 1.0
) -> UpdateResult:
    """Apply one epoch's training feedback to a schedule folder and append the next epoch."""
    from anglecurate.scheduling.epochs import update_schedule

    frame, info = update_schedule(schedule, feedback, reward_min, reward_max)
    return UpdateResult(Path(schedule), info["epoch"], info["accuracy"], info["angle"], info["mu"], frame)


def pilot(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    field: str,
    answer_field: str,
    arms: Sequence[str] = ("uniform", "gainrl", "length"),
    progress: bool = False,
    **options,
):
    """Short side-by-side GRPO trainings (TRL's ``GRPOTrainer``) of ``arms`` on ``model`` and
    ``data``, evaluated on held-out rows; returns a :class:`anglecurate.piloting.run.PilotResult`
    (``.curves``: pilot.parquet's rows, ``.summary``: pilot.json, ``.verdict``). ``options``:
    every field of :class:`anglecurate.piloting.plan.PilotConfig` (``seeds``, ``steps``,
    ``eval_every``, ``eval_rows``, ``reward``, ``ranking``, ...) and of
    :class:`anglecurate.piloting.plan.GRPOOptions` (``num_generations``, ``learning_rate``, ...).
    A rerun resumes; finished runs are kept."""
    from anglecurate.piloting.plan import GRPOOptions, PilotConfig
    from anglecurate.piloting.run import run_pilot

    _refuse_unknown(pilot, options, _options(pilot, PilotConfig, GRPOOptions, internal=("grpo",)))
    grpo_names = {f.name for f in dataclasses.fields(GRPOOptions)}
    grpo = GRPOOptions(**{k: v for k, v in options.items() if k in grpo_names})
    rest = {k: v for k, v in options.items() if k not in grpo_names}
    cfg = PilotConfig(
        model=str(model),
        data=str(data),
        out=str(out),
        field=field,
        answer_field=answer_field,
        arms=tuple(arms),
        grpo=grpo,
        **rest,
    )
    with _progress(progress) as bar:
        return run_pilot(cfg, bar)


def read_ranking(out: str | Path) -> pl.LazyFrame:
    """The ranked rows of a finished ``score`` folder, in rank order, as a polars LazyFrame
    (every original column, plus the score columns of docs/formats.md)."""
    from anglecurate.scoring.store import OutputDir

    _, parts = OutputDir(out).ranked_parts()
    return pl.scan_parquet(parts)
