"""calibrate's tests: a reward that tells the tiny model's completions apart, and a finished
calibration of the session's tiny ranking (40 questions, 12 of them rolled out)."""

from __future__ import annotations

import shutil
import sys

import pytest

REWARD_MODULE = '''
def odd_length(completions, answer, **_):
    """1.0 when the completion's length plus the answer is odd: deterministic, and it tells the
    untrained tiny model's sampled completions apart."""
    text = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float((len(t) + int(a)) % 2) for t, a in zip(text, answer)]
'''
REWARD = "calibrate_reward:odd_length"
# Small enough for seconds: 12 prompts x 4 completions of at most 4 tokens, 2 held-out folds
# and a short bootstrap (the fit's quality is tests/stats/test_learnability.py's subject).
FAST = {"sample": 12, "samples_per_prompt": 4, "max_new_tokens": 4, "reward": REWARD}
FAST |= {"folds": 2, "bootstrap": 100}
FAST_CLI = ["--sample", "12", "--samples-per-prompt", "4", "--max-new-tokens", "4", "--reward", REWARD]
FAST_CLI += ["--folds", "2", "--bootstrap", "100"]


@pytest.fixture(scope="session")
def reward_path(tmp_path_factory):
    """The reward module, importable for the whole session (its folder on sys.path)."""
    folder = tmp_path_factory.mktemp("reward")
    (folder / "calibrate_reward.py").write_text(REWARD_MODULE)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.fixture
def copy(ranking, tmp_path, reward_path):
    """A fresh copy of the tiny ranking, to calibrate (or refuse to) in place."""
    target = tmp_path / "ranked"
    shutil.copytree(ranking, target)
    return target


@pytest.fixture(scope="module")
def calibrated(ranking, tmp_path_factory, reward_path):
    """A finished calibration of a copy of the tiny ranking (read-only for the tests)."""
    import anglecurate as ac

    target = tmp_path_factory.mktemp("calibrated") / "ranked"
    shutil.copytree(ranking, target)
    lines: list[str] = []
    result = ac.calibrate(target, log=lines.append, **FAST)
    return target, result, lines
