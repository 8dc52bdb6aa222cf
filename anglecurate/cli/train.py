"""`anglecurate schedule` (and `schedule update`) and `pilot`: a ranking turned into what a
trainer reads, and short GRPO trainings that test it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from anglecurate.cli.options import (
    BATCH_TOKENS,
    CONFIG_HELP,
    DATA_HELP,
    ID_HELP,
    JSON_HELP,
    MODEL_HELP,
    RANKING_HELP,
    ROW_ID,
    SCALED,
    SPLIT_HELP,
    interruptible,
)


class ScheduleGroup(TyperGroup):
    """`anglecurate schedule`: a command of its own (its required options draw a schedule)
    that also leads to `schedule update`, which takes none of them. Its required options
    are required, so `--help` marks them and a missing one is click's one-line usage
    error, but not on the way to a subcommand."""

    def parse_args(self, ctx, args):
        if not (args and args[0] in self.commands):
            return super().parse_args(ctx, args)
        required = [p for p in self.params if p.required]
        for param in required:
            param.required = False
        try:
            return super().parse_args(ctx, args)
        finally:
            for param in required:
                param.required = True


schedule_app = typer.Typer(
    cls=ScheduleGroup,
    help="Turn a ranking into epoch schedules (GAIN-RL's Gaussian sampler).",
    invoke_without_command=True,
    no_args_is_help=True,
)


@schedule_app.callback()
def schedule(
    ctx: typer.Context,
    ranking: Path = typer.Option(..., help=RANKING_HELP),
    out: Path = typer.Option(..., help="Schedule folder to write (schedule.parquet, state.json)."),
    epochs: int = typer.Option(1, help="Epochs to draw now; 1 for a closed loop driven by feedback."),
    per_epoch: int = typer.Option(..., help="Distinct examples per epoch (K)."),
    seed: int = typer.Option(0, help="Seed of the sampler's generator."),
    batch_multiple: int = typer.Option(
        1, help="K must be a multiple of this: TRL's prompts per generation, verl's train_batch_size."
    ),
    export: list[str] = typer.Option(
        [],
        help="Trainer export to write: trl, verl, openrlhf, ordered, adarft, trinity "
        "(repeatable, or a comma list: trl,verl).",
        show_default="none",
    ),
    step: float = typer.Option(
        None,
        help="Open loop: move the centre this many ranks per epoch.",
        show_default="(N - 1) / (epochs - 1)",
    ),
    assume_accuracy: float = typer.Option(
        None, help="Open loop: move by the GAIN-RL rule with this accuracy.", show_default="off"
    ),
    assume_angle: float = typer.Option(0.0, help="Open loop: the angle term of that rule."),
    n: float = typer.Option(None, help="Update scale n.", show_default=f"500 x {SCALED}"),
    alpha: float = typer.Option(None, help="Update sharpness alpha.", show_default="2"),
    beta: float = typer.Option(None, help="Target accuracy beta.", show_default="0.5"),
    adj_min: float = typer.Option(None, help="Smallest move of the centre per epoch.", show_default="0"),
    adj_max: float = typer.Option(
        None, help="Largest move of the centre per epoch.", show_default=f"1000 x {SCALED}"
    ),
    sigma: float = typer.Option(
        None, help="Width of the Gaussian over ranks.", show_default=f"1000 x {SCALED}"
    ),
    mu0: float = typer.Option(None, help="Initial centre (a rank).", show_default="0"),
    shuffle: bool = typer.Option(False, "--shuffle", help="Shuffle within an epoch instead of rank order."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a schedule already in --out."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Draw epochs from a ranking into a schedule folder, with trainer exports."""
    if ctx.invoked_subcommand is not None:
        return
    from anglecurate import api

    sampler = {"n": n, "alpha": alpha, "beta": beta, "adj_min": adj_min, "adj_max": adj_max}
    sampler |= {"sigma": sigma, "mu0": mu0, "shuffle": shuffle}
    with interruptible("an earlier schedule is kept"):
        result = api.schedule(
            ranking,
            out,
            per_epoch,
            epochs=epochs,
            seed=seed,
            step=step,
            assume_accuracy=assume_accuracy,
            assume_angle=assume_angle,
            batch_multiple=batch_multiple,
            export=export,
            overwrite=overwrite,
            **sampler,
        )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if json_out:
        summary = {"out": str(out), "epochs": result.epochs, "per_epoch": per_epoch}
        summary |= {"rows": result.frame.height, "exports": result.exports, "sampler": result.sampler}
        print(json.dumps(summary | {"warnings": result.warnings}))
        return
    exports = f" with exports {', '.join(result.exports)}" if result.exports else ""
    print(f"wrote {result.epochs} epochs of {per_epoch} to {out}{exports}")
    p = result.sampler
    print(f"sampler: sigma {p['sigma']:g}, n {p['n']:g}, adj [{p['adj_min']:g}, {p['adj_max']:g}]")


@schedule_app.command("update")
def schedule_update(
    schedule_dir: Path = typer.Option(..., "--schedule", help="Schedule folder to extend."),
    feedback: Path = typer.Option(
        ..., help="Feedback file: uid, reward[, angle] rows, or accuracy[, angle]."
    ),
    reward_min: float = typer.Option(0.0, help="Reward that means 'wrong' (normalised to 0)."),
    reward_max: float = typer.Option(1.0, help="Reward that means 'right' (normalised to 1)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Apply one epoch's training feedback and append the next epoch."""
    from anglecurate import api

    with interruptible("the schedule is as it was before this update"):
        r = api.schedule_update(schedule_dir, feedback, reward_min=reward_min, reward_max=reward_max)
    if json_out:
        summary = {"out": str(r.out), "epoch": r.epoch, "accuracy": r.accuracy, "angle": r.angle}
        print(json.dumps(summary | {"mu": r.mu, "rows": r.frame.height}))
        return
    print(
        f"epoch {r.epoch}: accuracy {r.accuracy:.3f}, angle {r.angle:.3f}, "
        f"centre moved to rank {r.mu:.1f}; {r.frame.height} examples appended"
    )


def pilot(
    model: str = typer.Option(..., help=MODEL_HELP),
    data: str = typer.Option(..., help=DATA_HELP),
    out: Path = typer.Option(..., help="Pilot folder (created); a rerun resumes it."),
    field: str = typer.Option("prompt", help="Question column (text, or chat messages)."),
    answer_field: str = typer.Option("answer", help="Reference answer column the reward compares with."),
    id_field: str = typer.Option(None, help=ID_HELP, show_default=ROW_ID),
    split: str = typer.Option("train", help=SPLIT_HELP),
    config: str = typer.Option(None, help=CONFIG_HELP, show_default="the dataset's default"),
    ranking: Path = typer.Option(
        None,
        help="Angle ranking of the same rows (an `anglecurate score` folder).",
        show_default="none: the pilot scores its training rows into OUT/ranking",
    ),
    prompt_config: str = typer.Option(
        None,
        help="The rendering rows are scored, trained and evaluated in: none (the bare question), "
        "default (the paper's R1 prompt) or a TOML file.",
        show_default="none, or --ranking's own",
    ),
    arms: str = typer.Option(
        "uniform,gainrl,length",
        help="Arms, comma-separated: uniform, gainrl, gainrl-open, length, reverse, calibrated, pass-rate.",
    ),
    calibrate_sample: int = typer.Option(
        256, help="Rows the calibrated arm rolls out (stratified over the angle order) to fit its order."
    ),
    seeds: int = typer.Option(3, help="Seeds per arm."),
    seed_base: int = typer.Option(0, help="First seed; runs use seed-base .. seed-base + seeds - 1."),
    steps: int = typer.Option(60, help="Optimizer steps per run (the budget)."),
    eval_every: int = typer.Option(10, help="Held-out evaluation (and checkpoint) every N steps."),
    eval_rows: int = typer.Option(200, help="Rows held out of training for evaluation (seeded)."),
    eval_data: str = typer.Option(
        None, help="Held-out data instead of --eval-rows (same columns).", show_default="off"
    ),
    eval_temperature: float = typer.Option(0.0, help="0: greedy held-out answers; else sampled at this."),
    train_rows: int = typer.Option(
        None, help="Train on the first N rows left after the hold-out only.", show_default="all"
    ),
    reward: str = typer.Option("number", help="boxed, number, or module:function (TRL's signature)."),
    per_epoch: int = typer.Option(
        None, help="GAIN-RL epoch size in prompts.", show_default="prompts-per-step x eval-every"
    ),
    num_generations: int = typer.Option(8, help="GRPO completions per prompt."),
    prompts_per_step: int = typer.Option(8, help="Prompts per optimizer step."),
    max_completion_length: int = typer.Option(256, help="Longest completion in tokens."),
    learning_rate: float = typer.Option(1e-6, help="Learning rate (constant)."),
    temperature: float = typer.Option(1.0, help="Sampling temperature of training completions."),
    beta: float = typer.Option(0.0, help="KL coefficient (0: no reference model)."),
    bf16: bool = typer.Option(False, "--bf16", help="Train in bf16 (GPUs; CPUs train in fp32)."),
    use_vllm: bool = typer.Option(
        False, "--use-vllm", help="Generate with vLLM (GPU, vllm installed); evaluation shares the engine."
    ),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing", help="Trade compute for memory."
    ),
    max_train_tokens: int = typer.Option(
        None,
        help="Token budget of one training micro-batch (completions x longest sequence); each step "
        "accumulates its micro-batches.",
        show_default=BATCH_TOKENS,
    ),
    json_out: bool = typer.Option(False, "--json", help="Print pilot.json on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or verdict."),
) -> None:
    """Short side-by-side GRPO trainings: does the angle order learn faster than uniform here?"""
    from anglecurate import api

    with interruptible("finished runs and the last checkpoint of each run are kept"):
        result = api.pilot(
            model,
            data,
            out,
            field=field,
            answer_field=answer_field,
            arms=[a.strip() for a in arms.split(",") if a.strip()],
            progress=not quiet and not json_out,
            id_field=id_field,
            split=split,
            data_config=config,
            ranking=str(ranking) if ranking else None,
            prompt_config=prompt_config,
            calibrate_sample=calibrate_sample,
            seeds=seeds,
            seed_base=seed_base,
            steps=steps,
            eval_every=eval_every,
            eval_rows=eval_rows,
            eval_data=eval_data,
            eval_temperature=eval_temperature,
            train_rows=train_rows,
            reward=reward,
            per_epoch=per_epoch,
            num_generations=num_generations,
            prompts_per_step=prompts_per_step,
            max_completion_length=max_completion_length,
            learning_rate=learning_rate,
            temperature=temperature,
            beta=beta,
            bf16=bf16,
            use_vllm=use_vllm,
            gradient_checkpointing=gradient_checkpointing,
            max_train_tokens=max_train_tokens,
        )
    if json_out:
        print(json.dumps(result.summary, default=str))
    elif not quiet:
        for line in result.verdict:
            print(line, file=sys.stderr)
        if result.summary.get("cost"):
            print(result.summary["cost"]["summary"], file=sys.stderr)
        print(f"wrote {out / 'pilot.parquet'}, pilot.json and pilot.png", file=sys.stderr)
