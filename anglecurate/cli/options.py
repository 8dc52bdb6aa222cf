"""What the commands share: the choice enums, the help texts and the defaults --help shows
(docs/cli.md's options tables say the same: tests/cli/test_help_docs.py), and the Ctrl-C /
SIGTERM wrapper every long command runs in."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import StrEnum

import typer


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


@contextmanager
def interruptible(kept: str):
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
