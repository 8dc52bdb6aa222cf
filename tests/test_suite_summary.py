"""The suite's summary says what did not run here: a run without root (no tmpfs fault
tests), a GPU or the shared data can't read as a full one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPING = """
import pytest

def test_faults():
    pytest.skip("mounting a tmpfs needs root")

def test_other():
    pytest.skip("some optional extra is absent")
"""


def test_the_summary_names_skipped_fault_tests(tmp_path):
    (tmp_path / "test_skips.py").write_text(SKIPPING)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not run here" in done.stdout
    assert "1 skipped: storage faults on a real tmpfs (need root and mount; CI runs as root)" in done.stdout
    assert "optional extra" not in done.stdout.split("not run here")[1]
