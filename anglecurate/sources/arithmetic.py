"""``builtin:arithmetic``: a seeded arithmetic task of graded difficulty, for pilots.

A pilot needs a task on which a small model's held-out accuracy can rise within a short
budget, and a spread of difficulty for an ordering to exploit. SmolLM2-135M-Instruct, asked
for a bare number, answers about a third of one-digit sums zero-shot and almost no two-digit
ones: these six levels run from there to three-term sums of two-digit numbers.

Every row is a pure function of (seed, index), so the file is the same on every machine:

    uid        "arith-000123"
    problem    "What is 47 + 8? Reply with only the number."
    answer     "55" (an integer, as text)
    level      1..6 (the generator's difficulty grade; higher = harder)
    operation  "+", "-", "*" or "+-" (three terms)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

VERSION = 1
DEFAULT_ROWS = 3000
DEFAULT_SEED = 0
INSTRUCTION = "Reply with only the number."


# level: (first operand range, second operand range, operations); level 6 adds a third term
LEVELS = {
    1: ((1, 9), (1, 9), "+-"),  # one-digit sum or difference
    2: ((10, 99), (1, 9), "+-"),  # two digits and one digit
    3: ((2, 9), (2, 9), "*"),  # one-digit product
    4: ((10, 99), (10, 99), "+-"),  # two two-digit numbers
    5: ((11, 99), (2, 9), "*"),  # two digits times one digit
    6: ((10, 99), (10, 99), "+-"),  # a + b - c, c one digit
}


def _operands(rng: np.random.Generator, level: int) -> tuple[str, int, str]:
    """One problem of ``level``: (expression, value, operation). Differences are never
    negative. The generator's draws (a, b, then the operation or c) are part of the task's
    definition: changing their order changes every row."""
    (lo_a, hi_a), (lo_b, hi_b), ops = LEVELS[level]
    a, b = int(rng.integers(lo_a, hi_a + 1)), int(rng.integers(lo_b, hi_b + 1))
    if level == 6:
        c = int(rng.integers(1, 10))
        return f"{a} + {b} - {c}", a + b - c, "+-"
    if ops == "*":
        return f"{a} * {b}", a * b, "*"
    if rng.random() < 0.5:
        return f"{a} + {b}", a + b, "+"
    a, b = max(a, b), min(a, b)
    return f"{a} - {b}", a - b, "-"


def generate(rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> list[dict]:
    """``rows`` problems, levels drawn uniformly; row ``i`` depends only on (seed, i)."""
    out = []
    for i in range(rows):
        rng = np.random.Generator(np.random.PCG64([seed, i]))
        level = int(rng.integers(1, 7))
        expression, value, operation = _operands(rng, level)
        out.append(
            {
                "uid": f"arith-{i:06d}",
                "problem": f"What is {expression}? {INSTRUCTION}",
                "answer": str(value),
                "level": level,
                "operation": operation,
            }
        )
    return out


def cache_dir() -> Path:
    """Where generated built-ins are written: ``$ANGLECURATE_CACHE`` or ~/.cache/anglecurate."""
    root = os.environ.get("ANGLECURATE_CACHE") or Path.home() / ".cache" / "anglecurate"
    return Path(root) / "builtin"


def arithmetic_file(rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> Path:
    """The generated JSONL file, written once (atomically) and reused."""
    from anglecurate.storage.atomic import atomic_write

    path = cache_dir() / f"arithmetic-v{VERSION}-seed{seed}-{rows}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(row) + "\n" for row in generate(rows, seed))
        atomic_write(path, lambda tmp: tmp.write_text(lines))
    return path
