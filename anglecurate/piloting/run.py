"""``anglecurate pilot``: every (arm, seed) run of a pilot, then its table, verdict and figure.

Order of work: check the settings against the folder's, split the data (once), score the
training rows unless a ranking was given, then train the runs seed by seed, every arm of
a seed before the next seed (so a pilot stopped early still compares every arm), rewriting
``pilot.parquet``, ``pilot.json`` and ``pilot.png`` after each finished run (so a long
pilot can be read while it runs). A rerun skips finished runs and resumes the rest.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.piloting.plan import PilotConfig, check_config, discard_start, prepare_split
from anglecurate.piloting.record import CURVE_SCHEMA, STEP_SCHEMA, read_curve, read_steps
from anglecurate.piloting.train import DONE, Task, run_dir
from anglecurate.rewards.registry import resolve_reward
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet
from anglecurate.storage.lock import exclusive_writer

PARQUET, JSON, PNG = "pilot.parquet", "pilot.json", "pilot.png"
STEPS = "pilot_steps.parquet"  # one row per optimizer step of every finished run


@dataclass
class PilotResult:
    """What a pilot wrote: the folder, the rows of ``pilot.parquet`` and ``pilot.json``."""

    out: Path
    curves: pl.DataFrame
    summary: dict

    @property
    def verdict(self) -> list[str]:
        return self.summary.get("verdict", [])


# The arms whose order starts from the angle ranking (scored here without --ranking): the
# calibrated and pass-rate arms calibrate a copy of it, on its stored per-layer values.
RANKED_ARMS = ("gainrl", "gainrl-open", "reverse", "calibrated", "pass-rate")

# What the pilot trains with, and the extra that installs it (`make setup` does).
TRAINER_MODULES = (("trl", "trl"), ("datasets", "trl"))


def _need_trl() -> None:
    for module, extra in TRAINER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise UserError(f"anglecurate pilot trains with TRL: pip install 'anglecurate[{extra}]'")


def _ranking(cfg: PilotConfig, train_path: Path, folder: Path, progress):
    """The angle ranking of the training rows: ``--ranking``, or scored here (resumable), in
    the rendering the runs train in (``--prompt-config``; the bare question by default)."""
    from anglecurate.scheduling.epochs import load_ranking
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import score

    if cfg.ranking is not None:
        return load_ranking(cfg.ranking)
    out = folder / "ranking"
    _refuse_stale_ranking(cfg, out, folder)
    if not (out / "manifest.json").is_file():  # else finished: score() only reads it back
        progress.log(f"scoring the {train_path} training rows for the angle ranking into {out}")
    score(
        ScoreConfig(
            model=cfg.model,
            data=str(train_path),
            out=str(out),
            field=cfg.field,
            id_field="uid",
            prompt_config=cfg.prompt_config or "none",
        ),
        progress,
    )
    return load_ranking(out)


def _refuse_stale_ranking(cfg: PilotConfig, out: Path, folder: Path) -> None:
    """A ranking an earlier anglecurate scored here with the R1 prompt, while its runs trained
    on bare questions: rebuilt when no run has started, refused once runs rely on it."""
    from anglecurate.scoring.prompt import PromptConfig, load_prompt_config
    from anglecurate.scoring.store import OutputDir

    manifest = out / "manifest.json"
    if not manifest.is_file():
        return
    scored = PromptConfig.from_dict(OutputDir(out).read_manifest()["run"]["prompt"])
    if scored == load_prompt_config(cfg.prompt_config or "none"):
        return
    if (folder / "runs").is_dir():
        raise UserError(
            f"{out} was scored with prompt config {scored.name!r} but its runs train on "
            f"{cfg.prompt_config or 'none'!r} (earlier versions scored the pilot's ranking "
            "with the R1 prompt); start this pilot in a new --out"
        )
    shutil.rmtree(out)


def _task(cfg: PilotConfig, split, reward, ranking) -> Task:
    """The runs' shared task. The model and the rendering are the ranking's, rebuilt from its
    run record (so the model that scored is the one trained, on the prompts it scored);
    without a ranking (uniform and length arms only) they are ``--model`` and
    ``--prompt-config`` as given."""
    from anglecurate.scoring.spec import RunSpec
    from anglecurate.scoring.store import OutputDir

    spec = RunSpec.from_options(cfg.model, prompt_config=cfg.prompt_config or "none", template_required=False)
    if ranking is not None:
        recorded = RunSpec.from_run(OutputDir(ranking.path).read_manifest()["run"], ranking.path)
        if recorded.model_record()["config_hash"] != spec.model_record()["config_hash"]:
            raise UserError(
                f"--ranking {ranking.path} was scored with {recorded.source.path}, not --model "
                f"{cfg.model}; pass that model, or score with this one"
            )
        if cfg.prompt_config is not None and recorded.prompt != spec.prompt:
            raise UserError(
                f"--ranking {ranking.path} was scored with prompt config {recorded.prompt.name!r}, "
                f"not --prompt-config {cfg.prompt_config}; leave --prompt-config out to train in "
                "the ranking's rendering"
            )
        spec = recorded
    prompt = _renderer(spec, cfg)
    train_rows = [
        {"prompt": prompt(v, u), "answer": str(a), "uid": u}
        for v, a, u in zip(
            split.train[cfg.field], split.train[cfg.answer_field], split.train["uid"], strict=True
        )
    ]
    return Task(
        cfg,
        spec,
        train_rows,
        [prompt(v, u) for v, u in zip(split.eval[cfg.field], split.eval["uid"], strict=True)],
        [str(a) for a in split.eval[cfg.answer_field].to_list()],
        reward,
    )


def _renderer(spec, cfg: PilotConfig):
    """``prompt(value, uid)``: a row's prompt as the runs train and evaluate it, the
    conversation the ranking scored (its system prompt and shots, then the question). A
    model without a chat template trains on the plain question text."""
    from anglecurate.scoring.prompt import InvalidRow

    if spec.renderer is None:
        if spec.prompt.context_messages():
            raise UserError(
                f"{cfg.model} has no chat template for --prompt-config {spec.prompt.name!r}'s "
                "system prompt and shots; use --prompt-config none"
            )
        return lambda value, uid: value if isinstance(value, list) else str(value)
    # TRL renders with the tokenizer's template: make it the one that scored (a --chat-template
    # plain or FILE ranking), so training sees the tokens the ranking measured.
    spec.tokenizer.chat_template = spec.renderer.chat_template

    def prompt(value, uid):
        try:
            return spec.conversation(value)[0]
        except InvalidRow as exc:
            raise UserError(f"{cfg.data}: the row with uid {uid}: {exc} (--field {cfg.field})") from exc

    return prompt


def collect(folder: Path, cfg: PilotConfig, read=read_curve, schema=CURVE_SCHEMA) -> pl.DataFrame:
    """The curves (``read_steps``: the per-step rows) of the finished runs, in arm and seed order."""
    frames = []
    for arm in cfg.arms:
        for seed in seeds_of(cfg):  # rows in arm order whatever order the runs finished in
            run = run_dir(folder, arm, seed)
            if (run / DONE).is_file():
                frames.append(read(run))
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def seeds_of(cfg: PilotConfig) -> list[int]:
    return [cfg.seed_base + i for i in range(cfg.seeds)]


def training_batches(task: Task) -> dict:
    """``pilot.json``'s ``training``: how each optimizer step was split into micro-batches."""
    g = task.cfg.grpo
    completions = g.prompts_per_step * g.num_generations
    return {
        "completions_per_step": completions,
        "sequence_tokens": task.sequence_tokens,
        "micro_batch": task.micro_batch,
        "accumulation_steps": completions // task.micro_batch,
        "max_train_tokens": task.train_tokens,
    }


def write_outputs(
    folder: Path, cfg: PilotConfig, curves: pl.DataFrame, started: float, training: dict | None = None
) -> dict:
    """``pilot.parquet``, ``pilot.json`` and ``pilot.png`` from the finished runs."""
    from anglecurate.piloting.cost import pilot_cost
    from anglecurate.piloting.figure import draw_pilot
    from anglecurate.piloting.summary import summarize

    atomic_write_parquet(curves, folder / PARQUET)
    atomic_write_parquet(collect(folder, cfg, read_steps, STEP_SCHEMA), folder / STEPS)
    summary = summarize(curves) if curves.height else {"arms": {}, "verdict": ["no run has finished yet"]}
    summary = {
        "model": cfg.model,
        "data": cfg.data,
        "reward": cfg.reward,
        "runs_finished": curves.select("arm", "seed").unique().height if curves.height else 0,
        "runs_planned": len(cfg.arms) * cfg.seeds,
        **summary,
        "cost": pilot_cost(curves) if curves.height else None,
        "training": training,
        "config": cfg.to_dict(),
        "wall_seconds_this_invocation": round(time.time() - started, 1),
    }
    atomic_write_json(summary, folder / JSON)
    if curves.height:
        title = f"{Path(cfg.model).name} on {Path(cfg.data).name}: GRPO pilot"
        draw_pilot(curves, folder / PNG, title)
    return summary


def run_pilot(cfg: PilotConfig, progress) -> PilotResult:
    """Run (or resume) every (arm, seed) of ``cfg`` into ``cfg.out``."""
    from anglecurate.piloting.arms import build_orders
    from anglecurate.piloting.measured import MEASURED, check_measurable, measure_order
    from anglecurate.piloting.train import train_one

    cfg.validate()
    _need_trl()
    reward = resolve_reward(cfg.reward)
    folder = Path(cfg.out)
    started = time.time()
    with exclusive_writer(folder):
        try:
            check_config(cfg, folder)
            split = prepare_split(cfg, folder)
            ordered = [a for a in cfg.arms if a != "uniform"]
            ranking = None
            if any(a in RANKED_ARMS for a in ordered) or (ordered and cfg.ranking):
                ranking = _ranking(cfg, split.train_path, folder, progress)
            task = _task(cfg, split, reward, ranking)
            orders = build_orders(cfg.arms, ranking, split.train, cfg.field, task.spec.tokenizer)
            if set(cfg.arms) & set(MEASURED):  # their mistakes now, their rollouts later
                check_measurable(cfg, ranking)
        except UserError:
            discard_start(folder)  # a mistake leaves nothing that changes the next attempt
            raise
        training = training_batches(task)
        progress.log(
            f"each step: {training['completions_per_step']} completions of up to {task.sequence_tokens} "
            f"tokens, trained {task.micro_batch} at a time ({training['accumulation_steps']} micro-batches)"
        )
        for seed in seeds_of(cfg):  # seed by seed: a pilot stopped early still compares every arm
            for arm in cfg.arms:
                if (
                    arm in MEASURED
                    and arm not in orders
                    and not (run_dir(folder, arm, seed) / DONE).is_file()
                ):
                    # rollouts just before the arm's first run, so the cheap arms are not kept
                    # waiting behind them; a rerun resumes them, and reuses them once finished
                    orders[arm] = measure_order(arm, cfg, task, ranking, folder, progress, progress.log)
                train_one(task, arm, seed, orders.get(arm), progress)
                write_outputs(folder, cfg, collect(folder, cfg), started, training)
        curves = collect(folder, cfg)
        summary = write_outputs(folder, cfg, curves, started, training)
    return PilotResult(folder, curves, summary)
