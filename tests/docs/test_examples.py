"""Every fenced shell and Python example in README.md and docs/*.md runs as written.

Each page's runnable blocks run in page order in one fresh working directory (a later block
reads what an earlier one wrote: the README's `score`, then `rank` and `schedule` on its
output), shell blocks with `bash -e` and `anglecurate` on PATH resolving to this checkout's
CLI, Python blocks with this interpreter in one namespace per page. The directory holds what
the page assumes is there (GIVEN: a model folder, data with the columns the page names, a
ranking), the tiny random model stands in for the large models the pages name, and small
settings for the large ones (SUBSTITUTIONS: one table, each entry with its reason). Nothing
reaches the network: a hub id is read from a local Hugging Face cache, offline.

Left out: a block with `<!-- example: not run (REASON) -->` on the line above its fence
(a GPU, a cluster, a trainer's elided arguments; the reason names the test that runs the
same thing), data blocks (TOML, YAML, JSON, a directory tree, output), and the 4-space
indented blocks of docs/cli.md and the other pages: synopses with placeholders (M, D, OUT,
[options]) and measured runs on data of their own, not commands to paste. The real GRPO
pilot examples run (tiny model, 1 seed, 1 step) in a test marked slow: three arms take about
two minutes on 2 busy cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ..helpers import hub_model
from .examples import Block, docs, extract, to_json

ROOT = Path(__file__).resolve().parents[2]

# (page, as written, as run), each with the reason above it. Each is applied to every block
# of its page, and each must still match something (test_every_substitution_still_applies):
# a page that changed under it fails there rather than running something else.
SUBSTITUTIONS = [
    # The test runs in the environment `make setup` builds; tests/test_make.py checks it.
    ("README.md", "make setup && . .venv/bin/activate", "true"),
    # 8 rollouts of 256 tokens on every row take two minutes even for the tiny model; a
    # random model's answers are noise at any length.
    ("README.md", "--reward boxed", "--reward boxed --max-new-tokens 4"),
    # A backward pass per row, about 1 s each for the tiny model on 2 busy cores; 8 is the
    # least validate takes (two halves of 4).
    ("README.md", "--sample 240", "--sample 8"),
    # The fixture data hold 20 rows and the fixture ranking 40, not thousands.
    ("README.md", "--per-epoch 1024", "--per-epoch 16"),
    ("docs/schedule.md", "--per-epoch 1024", "--per-epoch 32"),
    # SmolLM2 (135M, dequantised from its GGUF) scores at ~600 tokens/s on 2 cores (README);
    # the tiny random model (3 layers, d=64) is the one the rest of the suite runs.
    ("README.md", "builtin:smollm2", "./tiny-model"),
    ("docs/api.md", "builtin:smollm2", "./tiny-model"),
    ("docs/pilot.md", "builtin:smollm2", "./tiny-model"),
    ("docs/api.md", "max_new_tokens=256", "max_new_tokens=4"),  # as --reward boxed above
    ("docs/api.md", "sample=256", "sample=20"),  # half the rows: 8 rollouts of each take seconds
    # The page's `ranked` is HumanEval, which has no reference answers to reward; calibrate
    # runs on a ranking of 40 questions that have them (scoring builtin:arithmetic's 3,000
    # rows takes a minute even for the tiny model).
    ("docs/api.md", 'ac.calibrate("ranked",', 'ac.calibrate("answers",'),
    (
        "docs/api.md",
        'ac.rank("ranked", by="p_pass")  # easiest first; or',
        'ac.rank("answers", by="p_pass")  # or',
    ),
    # The block names its inputs in a comment; the tiny model and its tokenizer stand in.
    (
        "docs/api.md",
        "# model, tokenizer: a transformers causal LM (the policy) and its tokenizer",
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained('tiny-model')\n"
        "tokenizer = AutoTokenizer.from_pretrained('tiny-model')",
    ),
    # One fixed folder under /tmp would be shared by every run on the machine.
    ("docs/report.md", "/tmp/example/OUT", "example/OUT"),
    # The pilots (slow): 1 seed of 1 step, a few rows, instead of 3 seeds of 30 steps.
    ("README.md", "--seeds 3 --steps 30", "--seeds 1 --steps 1"),
    (
        "README.md",
        "--eval-every 5 --eval-rows 150 --train-rows 1200",
        "--eval-every 1 --eval-rows 8 --train-rows 40",
    ),
    ("docs/pilot.md", "--seeds 3 --steps 30 --eval-every 5", "--seeds 1 --steps 1 --eval-every 1"),
    ("docs/pilot.md", "--eval-rows 150 --train-rows 1200", "--eval-rows 8 --train-rows 40"),
]

# Blocks run only by the slow test, together in one fresh directory, in this order:
# (page, text in the block). The two pilots are one study (pilot.md names the default arms
# the README leaves out), so the second finds the first's runs finished.
SLOW = {
    ("README.md", "anglecurate pilot"): "a GRPO pilot: 3 arms of 1 step, ~2 min on 2 busy cores",
    ("docs/pilot.md", "anglecurate pilot"): "the README's pilot again, finished by then",
}

# What each page expects in its working directory before its first block.
GIVEN = {
    "README.md": [
        "tiny-model",
        "Qwen2.5-0.5B-Instruct",
        "hub:Qwen/Qwen2.5-0.5B-Instruct",
        "data/",
        "train.parquet",
    ],
    "docs/api.md": ["tiny-model", "answers:ranking"],
    "docs/pilot.md": ["tiny-model"],
    "docs/report.md": ["OUT:synthetic"],
    "docs/scale-out.md": ["M", "D/"],
    "docs/schedule.md": ["OUT:ranking", "epoch0.jsonl"],
}

# Files the pages say their commands write, checked after the page ran.
WRITES = {
    "README.md": [
        "ranked-math/manifest.json",
        "ranked/calibrate.json",
        "sched/trl.parquet",
        "sched/openrlhf/epoch-00000.jsonl",
        "sched/openrlhf/epoch-00001.jsonl",
        "ranked/report/report.html",
    ],
    "docs/api.md": ["ranked/manifest.json", "sched/trl.parquet", "answers/calibrate.json"],
    "docs/report.md": ["OUT/report/report.html", "example/OUT/report/report.html"],
    "docs/scale-out.md": ["OUT/manifest.json"],
    "docs/schedule.md": ["S/trl.parquet", "S-loop/schedule.parquet", "open_instruct_train.jsonl"],
}


def all_blocks() -> list[Block]:
    return [block for doc in docs(ROOT) for block in extract(ROOT, doc)]


def is_slow(block: Block) -> str | None:
    return next((why for (doc, text), why in SLOW.items() if block.doc == doc and text in block.text), None)


def as_run(block: Block) -> Block:
    text = block.text
    for _, written, run in (entry for entry in SUBSTITUTIONS if entry[0] == block.doc):
        text = text.replace(written, run)
    return dataclasses.replace(block, text=text)


def runs_by_default(block: Block) -> bool:
    return block.kind != "data" and block.not_run is None and is_slow(block) is None


def runnable(doc: str) -> list[Block]:
    """The page's shell and Python blocks that run by default, as run."""
    return [as_run(b) for b in extract(ROOT, doc) if runs_by_default(b)]


# The pages with a block to run, one test each.
PAGES = sorted({b.doc for b in all_blocks() if runs_by_default(b)})


# ---- what is run, and why the rest is not


def test_blocks_are_classified_by_tag_or_content():
    def kind(text, lang=""):
        return Block("x.md", 1, lang, text).kind

    assert kind("make demo    # creates .venv\n") == "shell"
    assert kind("# a comment\nanglecurate score --model M \\\n    --out OUT\n") == "shell"
    assert kind("#SBATCH --array=0-7\n") == "shell"
    assert kind('result = ac.calibrate("ranked",\n    seed=0)\n') == "python"
    assert kind("from a.b import c\n") == "python"
    assert kind("anglecurate/          floors\n  base/        errors (one-line)\n") == "data"
    assert kind("anything at all\n", lang="yaml") == "data"
    assert kind("print(1)\n", lang="console") == "shell"


def test_every_shell_and_python_block_is_run_or_says_why_not():
    """A new example runs (and so must work) unless it says, above its fence, why not."""
    blocks = all_blocks()
    code = [b for b in blocks if b.kind != "data"]
    assert len(code) >= 20, "the extraction lost blocks"
    unexplained = [b.where for b in code if b.not_run is not None and len(b.not_run.split()) < 3]
    assert not unexplained, f"say in the not-run marker why these are not run: {unexplained}"
    marked_data = [b.where for b in blocks if b.kind == "data" and b.not_run]
    assert not marked_data, f"not-run markers on data blocks (never run anyway): {marked_data}"
    # What is neither marked nor slow is run, by the page's test below.
    run = {b.where for doc in PAGES for b in runnable(doc)}
    assert {b.where for b in code if b.not_run is None and not is_slow(b)} == run


def test_every_substitution_still_applies():
    blocks = all_blocks()
    for doc, written, _ in SUBSTITUTIONS:
        assert any(b.doc == doc and written in b.text for b in blocks), f"{doc} no longer holds {written!r}"
    for (doc, text), _ in SLOW.items():
        assert any(b.doc == doc and text in b.text for b in blocks), f"{doc} has no {text!r} block"


# ---- running them


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    """20 questions of varied length with answers and levels, as a shard of a hub dataset:
    enough for validate's two halves and calibrate's five folds, and few, for time."""
    rows = [
        {
            "problem": f"What is {i} plus {3 * i}?" + " Explain each step." * (i % 5),
            "answer": str(4 * i),
            "level": f"Level {i % 5 + 1}",
        }
        for i in range(20)
    ]
    path = tmp_path_factory.mktemp("example-data") / "train-00000-of-00001.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path


def lay_out(work: Path, cache: Path, names: list[str], request) -> None:
    """Put what a page assumes into ``work`` (and the hub cache ``cache``)."""
    model = request.getfixturevalue("tiny_model_dir")
    for name in names:
        if name.startswith("hub:"):
            hub_model(cache, model, repo=name[4:])
        elif name in ("tiny-model", "Qwen2.5-0.5B-Instruct", "M"):
            (work / name).symlink_to(model, target_is_directory=True)
        elif name == "data/":
            (work / name).mkdir()
            shutil.copy(request.getfixturevalue("example_data"), work / name)
        elif name in ("train.parquet", "D/"):  # read with the default --field, prompt
            path = work / name / "part-0.parquet" if name.endswith("/") else work / name
            path.parent.mkdir(exist_ok=True)
            df = pl.read_parquet(request.getfixturevalue("example_data"))
            df.rename({"problem": "prompt"}).write_parquet(path)
        elif name.endswith(":ranking"):
            shutil.copytree(request.getfixturevalue("ranking"), work / name.split(":")[0])
        elif name == "OUT:synthetic":
            from anglecurate.reporting.synthetic import synthetic_ranking

            synthetic_ranking(work / "OUT", validate=True, messages=True)
        elif name == "epoch0.jsonl":  # a 0/2 reward per example, as --reward-max 2 reads it
            (work / name).write_text("".join(json.dumps({"reward": r % 3}) + "\n" for r in range(32)))
        else:
            raise AssertionError(f"nothing lays out {name}")


def example_env(tmp_path: Path) -> dict:
    """This interpreter and this checkout: `anglecurate` and `python` on PATH run them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, args in (("anglecurate", "-m anglecurate"), ("python", "")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" {args} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
        "MPLBACKEND": "Agg",
    }


def run_page(blocks: list[Block], doc: str, tmp_path: Path, request) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    lay_out(work, tmp_path / "hf-cache", GIVEN.get(doc, []), request)
    listing = tmp_path / "blocks.json"
    listing.write_text(to_json(blocks))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.docs.examples", str(listing), str(ROOT)],
        cwd=work,
        env=example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    (tmp_path / "output.txt").write_text(output)  # each block's timing, for a look afterwards
    assert proc.returncode == 0, output[-6000:]
    return work


@pytest.mark.parametrize("doc", PAGES)
def test_the_page_runs_as_written(doc, tmp_path, request):
    work = run_page(runnable(doc), doc, tmp_path, request)
    missing = [path for path in WRITES.get(doc, []) if not (work / path).exists()]
    assert not missing, f"{doc} ran but did not write {missing}"


@pytest.mark.slow
def test_the_slow_examples_run_as_written(tmp_path, request):
    blocks = [as_run(b) for (doc, text) in SLOW for b in extract(ROOT, doc) if text in b.text]
    work = run_page(blocks, "docs/pilot.md", tmp_path, request)
    summary = json.loads((work / "pilot-arith" / "pilot.json").read_text())
    assert summary["runs_finished"] == summary["runs_planned"] > 0
