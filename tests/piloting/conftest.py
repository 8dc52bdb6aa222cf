"""The pilot tests' data: 24 arithmetic questions of three lengths, ids a0..a23."""

from __future__ import annotations

import json

import pytest

ARITH = [("3 + 4", 7), ("9 - 2", 7), ("5 * 6", 30), ("12 + 30", 42), ("8 - 8", 0), ("7 * 7", 49)]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "arith.jsonl"
    rows = [
        {"id": f"a{i}", "problem": f"What is {expr}?" + " Think." * (i % 3), "answer": str(value)}
        for i, (expr, value) in enumerate(ARITH * 4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
