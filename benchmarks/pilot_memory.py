"""Benchmark: the peak resident memory of `anglecurate pilot` (not a timed test).

Each case runs `anglecurate pilot` in a child process and reads the child's peak resident
set size from the kernel (``os.wait4``'s ``ru_maxrss``), with its wall seconds:

- default:  the command of issue 21 with every GRPO option at its default (8 prompts x 8
            completions of up to 256 tokens): SmolLM2-135M-Instruct (``builtin:smollm2``,
            trained in fp32) on the first 160 rows of ``builtin:arithmetic``, arms
            uniform,gainrl, 1 seed, 2 steps, evaluated every 2, 16 held-out rows;
- prompts:  the uniform arm alone, 1 step, at 2, 8 and 32 prompts per step (the other
            options as in ``default``): memory should not grow with the step.

``--max-train-tokens N`` passes the budget on (default: the pilot's default for the
device). Run one case at a time on a shared machine: they are CPU heavy. Usage (from the
repository root; the figures in docs/pilot.md came from these):

    nice -n 5 .venv/bin/python benchmarks/pilot_memory.py default --work /tmp/pilot-mem
    nice -n 5 .venv/bin/python benchmarks/pilot_memory.py prompts --work /tmp/pilot-mem

Each result is printed as one JSON line and appended to ``WORK/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROWS = 160


def arithmetic_rows(work: Path, rows: int = ROWS) -> Path:
    """The first ``rows`` rows of builtin:arithmetic (the same generator and seed), as JSONL."""
    from anglecurate.sources.arithmetic import arithmetic_file

    source = arithmetic_file()
    path = work / f"arithmetic-{rows}.jsonl"
    with source.open() as f:
        path.write_text("".join(line for _, line in zip(range(rows), f, strict=False)))
    return path


def pilot_command(data: Path, out: Path, *extra: str) -> list[str]:
    """`anglecurate pilot` as issue 21 ran it: every GRPO option at its default."""
    return [
        sys.executable, "-m", "anglecurate", "pilot", "--model", "builtin:smollm2", "--data", str(data),
        "--id-field", "uid", "--field", "problem", "--answer-field", "answer", "--out", str(out),
        "--seeds", "1", "--eval-rows", "16", "--reward", "number", *extra,
    ]  # fmt: skip


def peak_rss(command: list[str]) -> dict:
    """Run ``command``; its exit code, wall seconds and peak resident memory (GiB)."""
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": child.returncode,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),  # ru_maxrss is in KiB on Linux
    }


def _machine() -> dict:
    import torch

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _training(out: Path) -> dict | None:
    path = out / "pilot.json"
    return json.loads(path.read_text()).get("training") if path.is_file() else None


def run_case(name: str, work: Path, budget: list[str], extra: list[str], results: Path) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    command = pilot_command(arithmetic_rows(work), out, *extra, *budget)
    result = {"case": name, "command": " ".join(command[1:]), **peak_rss(command), "training": _training(out)}
    result["machine"] = _machine()
    line = json.dumps(result)
    print(line, flush=True)
    with results.open("a") as f:
        f.write(line + "\n")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", choices=["default", "prompts"])
    ap.add_argument("--work", type=Path, default=Path("pilot-memory"))
    ap.add_argument("--max-train-tokens", type=int, default=None)
    ap.add_argument("--prompts", default="2,8,32", help="prompts per step for the `prompts` case")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / "results.jsonl"
    budget = ["--max-train-tokens", str(args.max_train_tokens)] if args.max_train_tokens else []
    if args.case == "default":
        extra = ["--arms", "uniform,gainrl", "--steps", "2", "--eval-every", "2"]
        run_case("default", args.work, budget, extra, results)
        return
    for prompts in [int(p) for p in args.prompts.split(",")]:
        extra = ["--arms", "uniform", "--steps", "1", "--eval-every", "1", "--prompts-per-step", str(prompts)]
        run_case(f"prompts-{prompts}", args.work, budget, extra, results)


if __name__ == "__main__":
    main()
