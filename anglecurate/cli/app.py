"""The `anglecurate` command: thin wrappers that build a config and call one library function.

Heavy imports (torch, transformers, polars) happen inside the commands so ``--help`` is
instant. A :class:`~anglecurate.base.errors.UserError` becomes one line on stderr and exit code 2;
``ANGLECURATE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path

import typer
from typer.core import TyperGroup

from anglecurate.base.errors import UserError

app = typer.Typer(
    name="anglecurate",
    help="Rank prompt datasets for RL fine-tuning by layer-wise angle concentration (GAIN-RL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class DType(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"
    fp16 = "fp16"


class Packing(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class OnLong(StrEnum):
    skip = "skip"
    truncate = "truncate"


class Metric(StrEnum):
    angles = "angles"
    gainrl_reference = "gainrl-reference"


class GenerationEngine(StrEnum):
    auto = "auto"
    hf = "hf"
    vllm = "vllm"


class NanPolicy(StrEnum):
    last = "last"
    drop = "drop"
    first = "first"


MODEL_HELP = (
    "A local Hugging Face model folder (config.json + safetensors), a .gguf file, builtin:smollm2, "
    "or a hub id (org/name)."
)
DATA_HELP = (
    "A JSON array, JSONL, Parquet or Arrow file; a folder or glob of such shards; a save_to_disk "
    "folder; builtin:humaneval or builtin:arithmetic; or a hub dataset id (org/name)."
)
REVISION_HELP = "Revision (branch, tag or commit) of a hub model id."
SPLIT_HELP = "Split of a hub dataset or a DatasetDict folder."
CONFIG_HELP = "Configuration (subset) of a hub dataset."
TEMPLATE_HELP = "Chat template: plain (User:/Assistant: turns, for base models) or a Jinja file."
FIELD_HELP = "Prompt column: question text (string) or chat messages (list of {role, content})."
ID_HELP = "Stable unique id column, copied to uid."
PROMPT_HELP = (
    "System prompt and few-shot turns: default (the paper's R1 prompt and 2+2 example), none, or a TOML file."
)
METRIC_HELP = "angles (weighted c_intra + c_inter), or gainrl-reference (the authors' per-prompt value)."
LENGTH_HELP = "Rank by the score's residual after a monotone fit on question length."
DTYPE_HELP = "Compute dtype; auto: the checkpoint's."
DEVICE_HELP = "auto (CUDA if present), cpu, cuda or cuda:N."
RANKING_HELP = "Output folder of `anglecurate score`."
RECORDED_TEMPLATE_HELP = "The chat template the ranking was scored with."
# The defaults --help shows for options whose value None means "work it out": the docs'
# options tables say the same (tests/cli/test_help_docs.py).
ROW_ID = "the row index; builtin:arithmetic: its uid"
BATCH_TOKENS = "2048 on CPU, 16384 on GPU"
CURRENT = "the current choice's"
RECORDED = "the one RANKING recorded"
SCALED = "N/7500"  # the authors' lengths in ranks, set for MATH's 7,500 rows, scaled to N
JSON_HELP = "Print a machine-readable summary on stdout."


@app.command()
def score(
    model: str = typer.Option(..., help=MODEL_HELP),
    data: str = typer.Option(..., help=DATA_HELP),
    out: Path = typer.Option(..., help="Output folder (created); a rerun resumes it."),
    revision: str = typer.Option(None, help=REVISION_HELP, show_default="main"),
    split: str = typer.Option("train", help=SPLIT_HELP),
    config: str = typer.Option(None, help=CONFIG_HELP, show_default="the dataset's default"),
    field: str = typer.Option("prompt", help=FIELD_HELP),
    id_field: str = typer.Option(None, help=ID_HELP, show_default=ROW_ID),
    prompt_config: str = typer.Option("default", help=PROMPT_HELP),
    chat_template: str = typer.Option(None, help=TEMPLATE_HELP, show_default="the tokenizer's"),
    layers: str = typer.Option("all", help="Layers to score: all, last, or indices like 0,12,-1."),
    rank_layer: int = typer.Option(None, help="Layer whose score ranks rows.", show_default="deepest scored"),
    w_intra: float = typer.Option(1.0, help="Weight of c_intra in the score."),
    w_inter: float = typer.Option(1.0, help="Weight of c_inter in the score (the authors' code used 8)."),
    metric: Metric = typer.Option(Metric.angles, help=METRIC_HELP),
    length_control: bool = typer.Option(False, "--length-control", help=LENGTH_HELP),
    nan_policy: NanPolicy = typer.Option(
        NanPolicy.last,
        help="NaN scores: ranked last, first (as the authors' argsort), or drop (to undefined.parquet).",
    ),
    ref_prefix: int = typer.Option(
        None, help="gainrl-reference only: the authors' P in tokens.", show_default="each prompt's own"
    ),
    ref_suffix: int = typer.Option(
        None, help="gainrl-reference only: the authors' S in tokens.", show_default="each prompt's own"
    ),
    dtype: DType = typer.Option(DType.auto, help=DTYPE_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    max_length: int = typer.Option(4096, help="Longest prompt in tokens; see --on-long."),
    on_long: OnLong = typer.Option(
        OnLong.skip, help="Prompts over --max-length: skip, or truncate the question."
    ),
    max_batch_tokens: int = typer.Option(
        None,
        help="Token budget of a padded batch (rows x longest prompt); a longer prompt runs alone.",
        show_default=BATCH_TOKENS,
    ),
    chunk_rows: int = typer.Option(1024, help="Rows per checkpointed chunk (the unit of resume)."),
    shard_rows: int = typer.Option(50000, help="Rows per output Parquet part."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip and count malformed rows instead of stopping."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run with other options in --out."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="Allow a model's own Python code to run."
    ),
    packing: Packing = typer.Option(
        Packing.auto, help="Pack each batch into one sequence: on, off, or auto (on with a varlen attention)."
    ),
    attn_implementation: str = typer.Option(
        "auto",
        help="Attention kernel: auto (SDPA where the model supports it, else eager), sdpa, eager, "
        "flex_attention, flash_attention_2 or flash_attention_3 (the last three padding-free with "
        "--packing).",
    ),
    embed: int = typer.Option(
        None,
        help="Also store, per row, the mean of the question tokens' hidden state (the MLP input the "
        "angles use) at this scored layer, in OUT/embeddings.safetensors.",
        show_default="off",
    ),
    shard: str = typer.Option(
        None, help="Score only shard i/N of the rows (by uid hash) into OUT.", show_default="whole"
    ),
    devices: str = typer.Option(
        None, help="One shard per device, e.g. 0,1,2,3 (CUDA) or cpu,cpu.", show_default="off"
    ),
    engine: Engine = typer.Option(Engine.local, help="local (this process), or ray (an actor pool)."),
    num_workers: int = typer.Option(2, help="Ray actors (one model each; one GPU each on GPU clusters)."),
    ray_address: str = typer.Option(
        None, help="Ray cluster to join (--engine ray).", show_default="RAY_ADDRESS, or start one"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Score every prompt of a dataset and write a ranked copy of it, plus a manifest."""
    from anglecurate import api
    from anglecurate.data.shard import launcher_shard

    if shard is None and devices is None:  # under torchrun: the shard and device come from the launcher
        parsed, local_rank = launcher_shard()
        shard = None if parsed.whole else str(parsed)
        if local_rank is not None and device == "auto":
            import torch

            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    show = not quiet and not json_out
    with _interruptible("finished chunks are kept"):
        result = api.score(
            model,
            data,
            out,
            shard=shard,
            devices=devices,
            engine=engine.value,
            num_workers=num_workers,
            ray_address=ray_address,
            progress=show,
            revision=revision,
            split=split,
            data_config=config,
            field=field,
            id_field=id_field,
            prompt_config=prompt_config,
            chat_template=chat_template,
            layers=layers,
            rank_layer=rank_layer,
            w_intra=w_intra,
            w_inter=w_inter,
            metric=metric.value,
            length_control=length_control,
            nan_policy=nan_policy.value,
            ref_prefix=ref_prefix,
            ref_suffix=ref_suffix,
            dtype=dtype.value,
            device=device,
            max_length=max_length,
            on_long=on_long.value,
            max_batch_tokens=max_batch_tokens,
            chunk_rows=chunk_rows,
            shard_rows=shard_rows,
            skip_invalid=skip_invalid,
            overwrite=overwrite,
            trust_remote_code=trust_remote_code,
            packing=packing.value,
            attn_implementation=attn_implementation,
            embed=embed,
        )
    _report(result, quiet, json_out)


def _report(result, quiet: bool, json_out: bool) -> None:
    from rich.console import Console

    from anglecurate.cli.display import print_summary

    if result.status == "shard complete":
        missing = result.extra["missing_shards"]
        summary = {"out": result.out, "status": result.status, "missing_shards": missing}
        line = f"shard done; waiting for shards {', '.join(missing)}" if missing else "shard done"
        if json_out:
            print(json.dumps(summary))
        elif not quiet:
            print(f"{line} (`anglecurate merge {result.out}` once all are done)", file=sys.stderr)
        return
    if json_out:
        print(json.dumps(result.summary(), default=str))
    elif not quiet:
        print_summary(Console(stderr=True), result.summary())


@app.command("merge")
def merge_shards(
    out: Path = typer.Argument(..., help="Output folder that shards of one run scored into."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Build the global ranking and manifest of a sharded run once every shard finished."""
    from anglecurate import api

    with _interruptible("the earlier ranking is kept"):
        result = api.merge(out)
    _report(result, False, json_out)


@app.command()
def rank(
    out: Path = typer.Argument(..., help="Output folder of `anglecurate score`."),
    layer: int = typer.Option(None, help="Layer whose stored values make the score.", show_default=CURRENT),
    w_intra: float = typer.Option(None, help="Weight of c_intra in the score.", show_default=CURRENT),
    w_inter: float = typer.Option(None, help="Weight of c_inter in the score.", show_default=CURRENT),
    metric: Metric = typer.Option(None, help=METRIC_HELP, show_default=CURRENT),
    length_control: bool = typer.Option(
        None, "--length-control/--no-length-control", help=LENGTH_HELP, show_default=CURRENT
    ),
    nan_policy: NanPolicy = typer.Option(
        None,
        help="Rows whose --by value is NaN or null: ranked last, first, or drop (to undefined.parquet).",
        show_default=CURRENT,
    ),
    from_validate: bool = typer.Option(
        False, "--from-validate", help="Take the choice `anglecurate validate` recommended."
    ),
    by: str = typer.Option(
        None,
        help="What orders the rows: score (the angles, highest first), learnability, p_pass (highest "
        "first: easiest first), length (shortest question first), or any numeric column (highest "
        "first).",
        show_default="the current choice's (score after score)",
    ),
    ascending: bool = typer.Option(
        None,
        "--ascending/--descending",
        help="Walk --by lowest first / highest first.",
        show_default="--by's own direction",
    ),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rank a scored folder again from its stored columns, in seconds, without the model."""
    from anglecurate import api

    with _interruptible("the earlier ranking is kept"):
        result = api.rank(
            out,
            layer=layer,
            w_intra=w_intra,
            w_inter=w_inter,
            metric=metric and metric.value,
            length_control=length_control,
            nan_policy=nan_policy and nan_policy.value,
            from_validate=from_validate,
            by=by,
            ascending=ascending,
        )
    _report(result, False, json_out)


@app.command()
def validate(
    ranking: Path = typer.Option(..., help=RANKING_HELP),
    sample: int = typer.Option(240, help="Rows to measure, one per stratum of the ranking; split in halves."),
    seed: int = typer.Option(
        0, help="Seed of the sample, the halves, the bootstrap, the permutations and the RL sampling."
    ),
    answer_field: str = typer.Option(
        None,
        help="Reference answer column; a struct field dotted.",
        show_default="the first of answer, solution, reward_model.ground_truth, extra_info.answer",
    ),
    difficulty_field: str = typer.Option(
        None,
        help="Difficulty column, a covariate (numbers, or text like Level 3).",
        show_default="difficulty or level if present",
    ),
    target: str = typer.Option(
        "grad_norm",
        help="What the features are tested against: grad_norm, loss, grad_mlp_in or rl_grad_norm.",
    ),
    rl_samples: int = typer.Option(0, help="RL-style target: completions sampled per prompt (0: off)."),
    max_new_tokens: int = typer.Option(512, help="Longest sampled completion (RL-style target)."),
    reward: str = typer.Option(
        "boxed",
        help="RL-style target's reward: boxed (\\boxed{} matches), number (last number matches), "
        "or module:function (TRL's signature).",
    ),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: DType = typer.Option(DType.auto, help=DTYPE_HELP),
    chat_template: str = typer.Option(None, help=RECORDED_TEMPLATE_HELP, show_default=RECORDED),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples per interval."),
    permutations: int = typer.Option(1000, help="Permutations of the family-wise test."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or tables."),
    json_out: bool = typer.Option(False, "--json", help="Print validate.json on stdout."),
) -> None:
    """Measure real gradients on a sample and show whether the ranking signal holds."""
    from rich.console import Console

    from anglecurate import api
    from anglecurate.cli.display import print_validation

    show = not quiet and not json_out
    with _interruptible("measured examples are kept"):
        result = api.validate(
            ranking,
            progress=show,
            sample=sample,
            seed=seed,
            answer_field=answer_field,
            difficulty_field=difficulty_field,
            target=target,
            rl_samples=rl_samples,
            max_new_tokens=max_new_tokens,
            reward=reward,
            device=device,
            dtype=dtype.value,
            chat_template=chat_template,
            bootstrap=bootstrap,
            permutations=permutations,
        )
    if json_out:
        print(json.dumps(result.report))
    elif show:
        print_validation(Console(), result.report)
        print(f"wrote {result.json_path} and {result.parquet_path}", file=sys.stderr)


@app.command()
def calibrate(
    ranking: Path = typer.Option(..., help=RANKING_HELP),
    sample: int = typer.Option(256, help="Prompts rolled out, one per stratum of the ranking's order."),
    samples_per_prompt: int = typer.Option(8, help="Completions per prompt (k, a GRPO group); 2 or more."),
    reward: str = typer.Option(
        "number",
        help="number (the last number matches), boxed (\\boxed{} matches), or module:function "
        "(TRL's signature).",
    ),
    answer_field: str = typer.Option(
        "answer", help="Reference answer column the reward compares with; a struct field dotted."
    ),
    max_new_tokens: int = typer.Option(256, help="Longest completion in tokens."),
    temperature: float = typer.Option(1.0, help="Sampling temperature: the training one (above 0)."),
    seed: int = typer.Option(0, help="Seed of the sample, the sampling, the folds and the bootstrap."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: DType = typer.Option(DType.auto, help=DTYPE_HELP),
    engine: GenerationEngine = typer.Option(
        GenerationEngine.auto,
        help="Generation: hf, vllm, or auto (vLLM where installed with a GPU, else hf).",
    ),
    max_batch_tokens: int = typer.Option(
        None,
        help="HF generate's batch budget: sequences x (prompt + --max-new-tokens).",
        show_default="32768",
    ),
    chat_template: str = typer.Option(None, help=RECORDED_TEMPLATE_HELP, show_default=RECORDED),
    embed: bool = typer.Option(
        False, "--embed", help="Also fit on the pooled hidden state `score --embed` stored."
    ),
    folds: int = typer.Option(5, help="Held-out folds of the predictor's quality."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples per interval."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a calibration with other rollout settings in RANKING."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No cost line, progress bar or summary."),
    json_out: bool = typer.Option(False, "--json", help="Print calibrate.json on stdout."),
) -> None:
    """Measure pass rates with k rollouts on a sample, predict them for every row (p_pass)."""
    from anglecurate import api
    from anglecurate.cli.display import calibration_lines

    show = not quiet and not json_out
    with _interruptible("finished prompts are kept"):
        result = api.calibrate(
            ranking,
            progress=show,
            log=(lambda line: print(line, file=sys.stderr)) if show else None,
            sample=sample,
            samples_per_prompt=samples_per_prompt,
            reward=reward,
            answer_field=answer_field,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            device=device,
            dtype=dtype.value,
            engine=engine.value,
            max_batch_tokens=max_batch_tokens,
            chat_template=chat_template,
            embed=embed,
            folds=folds,
            bootstrap=bootstrap,
            overwrite=overwrite,
        )
    if json_out:
        print(json.dumps(result.summary, default=str))
    elif show:
        for line in calibration_lines(result.summary):
            print(line, file=sys.stderr)


@app.command()
def report(
    ranking: Path = typer.Option(..., help=RANKING_HELP),
    by: list[str] = typer.Option(
        [],
        help="Also plot the score against this column (repeatable, or a comma list: level,type).",
        show_default="none",
    ),
    out: Path = typer.Option(None, help="Report folder.", show_default="RANKING/report"),
    sample: int = typer.Option(None, help="Most points drawn in a scatter plot.", show_default="20,000"),
    pilot: Path = typer.Option(
        None,
        help="End the page with this `anglecurate pilot` folder's verdict, table and pilot.png.",
        show_default="the pilot that scored RANKING",
    ),
) -> None:
    """Write a self-contained HTML report (and its figures as PNG) of a ranking."""
    from anglecurate import api

    with _interruptible("an earlier report is kept"):
        result = api.report(ranking, by=by, out=out, sample=sample, pilot=pilot)
    print(f"wrote {result.html} and {len(result.figures)} figures", file=sys.stderr)


@app.command()
def inspect(
    model: str = typer.Option(..., help=MODEL_HELP),
    data: str = typer.Option(..., help=DATA_HELP),
    row: int = typer.Option(0, help="Row index to show."),
    revision: str = typer.Option(None, help=REVISION_HELP, show_default="main"),
    split: str = typer.Option("train", help=SPLIT_HELP),
    config: str = typer.Option(None, help=CONFIG_HELP, show_default="the dataset's default"),
    field: str = typer.Option("prompt", help=FIELD_HELP),
    id_field: str = typer.Option(None, help="Id column, shown beside the row.", show_default=ROW_ID),
    prompt_config: str = typer.Option("default", help=PROMPT_HELP),
    chat_template: str = typer.Option(None, help=TEMPLATE_HELP, show_default="the tokenizer's"),
) -> None:
    """Show one prompt's tokens coloured by segment: prefix, question, suffix."""
    from rich.console import Console

    from anglecurate.cli.display import print_inspect
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import inspect_row

    cfg = ScoreConfig(
        model=model,
        data=data,
        out="",
        revision=revision,
        split=split,
        data_config=config,
        field=field,
        id_field=id_field,
        prompt_config=prompt_config,
        chat_template=chat_template,
    )
    tokenizer, seg, uid = inspect_row(cfg, row)
    print_inspect(Console(), tokenizer, seg, uid)


@app.command()
def show(
    out: Path = typer.Argument(..., help="Output folder of `anglecurate score`."),
    n: int = typer.Option(5, "-n", help="Rows to show at each end."),
) -> None:
    """Print the top and bottom of a ranking."""
    from rich.console import Console

    from anglecurate.cli.display import print_ranking_ends

    print_ranking_ends(Console(), out, n)


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
app.add_typer(schedule_app, name="schedule")


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
    with _interruptible("an earlier schedule is kept"):
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

    with _interruptible("the schedule is as it was before this update"):
        r = api.schedule_update(schedule_dir, feedback, reward_min=reward_min, reward_max=reward_max)
    if json_out:
        summary = {"out": str(r.out), "epoch": r.epoch, "accuracy": r.accuracy, "angle": r.angle}
        print(json.dumps(summary | {"mu": r.mu, "rows": r.frame.height}))
        return
    print(
        f"epoch {r.epoch}: accuracy {r.accuracy:.3f}, angle {r.angle:.3f}, "
        f"centre moved to rank {r.mu:.1f}; {r.frame.height} examples appended"
    )


@app.command()
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

    with _interruptible("finished runs and the last checkpoint of each run are kept"):
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


@contextmanager
def _interruptible(kept: str):
    """Ctrl-C, or SIGTERM from a scheduler, ends a command with one line saying what was kept
    (exit 130 or 143), after the library's own cleanup ran (locks released, partial files
    removed). Inside a command: click would otherwise print "Aborted!" and exit 1."""
    from anglecurate.storage.faults import interrupted_line, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        line, code = interrupted_line(exc, kept)
        print(line, file=sys.stderr)
        raise typer.Exit(code) from None


def main() -> None:
    """Entry point: run the app, turning user errors, usage mistakes included (an unknown
    option, a mistyped choice), into one line and exit code 2."""
    from anglecurate.cli.usage import UsageError, is_help_request, usage_line
    from anglecurate.storage.faults import storage_error

    args = sys.argv[1:]
    try:
        # Not standalone: typer's usage errors come here instead of its multi-line box, and
        # an exit code (typer.Exit, --help) is returned instead of raised.
        code = app(args=args, standalone_mode=False)
    except UsageError as exc:
        if is_help_request(exc):  # a bare `anglecurate` or `anglecurate schedule`: its help
            exc.show()
        else:
            print(f"error: {usage_line(exc, args)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input at a prompt, or Ctrl-C outside a command
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        # A storage fault outside the library's writers (a full disk while printing JSON to
        # a file, say) is a user's problem too: one line, not a traceback.
        err = exc if isinstance(exc, UserError) else storage_error(exc)
        if err is None or os.environ.get("ANGLECURATE_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
