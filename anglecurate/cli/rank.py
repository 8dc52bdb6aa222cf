"""`anglecurate score`, `merge`, `rank`, `inspect` and `show`: a ranking made, merged, re-ranked
and looked at."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from anglecurate.cli.options import (
    BATCH_TOKENS,
    CONFIG_HELP,
    CURRENT,
    DATA_HELP,
    DEVICE_HELP,
    DTYPE_HELP,
    FIELD_HELP,
    ID_HELP,
    JSON_HELP,
    LENGTH_HELP,
    METRIC_HELP,
    MODEL_HELP,
    PROMPT_HELP,
    REVISION_HELP,
    ROW_ID,
    SPLIT_HELP,
    TEMPLATE_HELP,
    DType,
    Engine,
    Metric,
    NanPolicy,
    OnLong,
    Packing,
    interruptible,
)


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
    with interruptible("finished chunks are kept"):
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


def merge_shards(
    out: Path = typer.Argument(..., help="Output folder that shards of one run scored into."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Build the global ranking and manifest of a sharded run once every shard finished."""
    from anglecurate import api

    with interruptible("the earlier ranking is kept"):
        result = api.merge(out)
    _report(result, False, json_out)


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

    with interruptible("the earlier ranking is kept"):
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


def show(
    out: Path = typer.Argument(..., help="Output folder of `anglecurate score`."),
    n: int = typer.Option(5, "-n", help="Rows to show at each end."),
) -> None:
    """Print the top and bottom of a ranking."""
    from rich.console import Console

    from anglecurate.cli.display import print_ranking_ends

    print_ranking_ends(Console(), out, n)
