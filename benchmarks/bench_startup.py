"""Benchmark: how long the command takes to start, cold (a fresh interpreter each time).

Times, in new processes, ``import anglecurate`` (``python -c``), ``anglecurate --help``
(``python -m anglecurate``) and, for scale, ``import torch``, and prints the median and the
best of ``--repeats`` runs in seconds, with the interpreter's own start (``python -c pass``)
measured alike. The heavy libraries load inside the commands (see ``anglecurate/cli/app.py``),
so ``--help`` should cost the interpreter, typer and click, not torch, transformers or polars;
``tests/cli/test_cli.py`` checks what it imports, this script how long it takes. Usage (from
the repository root):

    .venv/bin/python benchmarks/bench_startup.py --repeats 5 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CASES = {
    "python": ["-c", "pass"],
    "import anglecurate": ["-c", "import anglecurate"],
    "anglecurate --help": ["-m", "anglecurate", "--help"],
    "import torch": ["-c", "import torch"],
}


def time_case(args: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the timings (seconds) to this file")
    args = ap.parse_args()
    results = {}
    for name, case in CASES.items():
        times = time_case(case, args.repeats)
        results[name] = {"median_s": statistics.median(times), "best_s": min(times), "runs_s": times}
        print(f"{name:<22} median {statistics.median(times):6.3f} s   best {min(times):6.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.executable, "repeats": args.repeats, "cases": results}, f, indent=2)


if __name__ == "__main__":
    main()
