"""`anglecurate validate`, `calibrate` and `report`: does the signal hold, what can the model
learn from, and the page that shows it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from anglecurate.cli.options import (
    DEVICE_HELP,
    DTYPE_HELP,
    RANKING_HELP,
    RECORDED,
    RECORDED_TEMPLATE_HELP,
    DType,
    GenerationEngine,
    interruptible,
)


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
    with interruptible("measured examples are kept"):
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
    with interruptible("finished prompts are kept"):
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

    with interruptible("an earlier report is kept"):
        result = api.report(ranking, by=by, out=out, sample=sample, pilot=pilot)
    print(f"wrote {result.html} and {len(result.figures)} figures", file=sys.stderr)
