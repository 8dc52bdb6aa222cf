"""The verl adapters against the older verl releases they support.

One environment holds one verl, and the test environment holds the newest (0.9.1). The older
releases live in overlays that ``make setup-test`` installs beside it
(``.venv/overlays/verl-VERSION``: the verl wheel alone, ``--no-deps``; everything it imports
comes from the test environment). Each overlay runs the adapter tests in a Python process of
its own with the overlay first on ``PYTHONPATH``, so those tests import that verl.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OVERLAYS = Path(sys.prefix) / "overlays"

# verl 0.7.1: the data.sampler sampler and the data.custom_cls dataset; 0.8.0: the dataset
# (0.8 removed data.sampler).
RELEASES = [
    ("0.7.1", ["test_verl.py", "test_verl_dataset.py"]),
    ("0.8.0", ["test_verl_dataset.py"]),
]


def _overlay_env(overlay: Path) -> dict:
    path = os.pathsep.join(p for p in (str(overlay), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.parametrize(("version", "files"), RELEASES, ids=[f"verl-{v}" for v, _ in RELEASES])
def test_adapters_under_an_older_verl(version, files):
    overlay = OVERLAYS / f"verl-{version}"
    if not (overlay / "verl").is_dir():
        pytest.skip(f"verl {version} is not installed in {overlay}; `make setup-test` installs it")
    env = _overlay_env(overlay)
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('verl'))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == version, f"{overlay} holds verl {found}"
    assert importlib.metadata.version("verl") != version  # this process has the newest

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(HERE / f) for f in files)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    summary = run.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    skipped = int(m.group(1)) if (m := re.search(r"(\d+) skipped", summary)) else 0
    assert passed >= 18 and skipped == 0, summary  # none skipped for want of this verl's APIs
