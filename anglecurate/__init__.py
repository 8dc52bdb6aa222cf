"""anglecurate: rank prompt datasets for RL fine-tuning by layer-wise angle concentration.

One subpackage per capability, stacked in floors. A module imports only from its own floor
and the floors below it; ``tests/test_layout.py`` fails on any import that points up. From
the ground up:

    base/       errors (one-line user errors), progress (progress bars)
    storage/    atomic writes, the folder lock, storage faults and SIGTERM
    sources/    names that resolve to files: hub ids, builtin:NAME, builtin:arithmetic
    stats/      pure statistics: correlations, samples, isotonic fits
    rewards/    one reward system: answers extracted and compared, rewards resolved
    data/       prompt data: where rows come from, read in chunks; shards of a run
    model/      loading a checkpoint and finding its decoder layers and MLPs
    generation/ completions from a policy (HF generate or vLLM), seeded, and rewarded:
                held-out evaluation and rollouts share it
    scoring/    a dataset in, a ranked copy out: the scoring pipeline, stage by stage,
                and the run spec every later command rebuilds a run from
    evidence/   validate: does the signal track gradients for this model and data?
    calibration/ calibrate: pass rates measured on a sample by rollouts, and predicted for
                every row from the prefill features (p_pass, learnability)
    scheduling/ GAIN-RL epoch schedules and the trainer adapters
    reporting/  the HTML report of a ranking
    piloting/   short side-by-side GRPO trainings: does an order pay off here?
    scale/      per-device processes, a Ray cluster
    api.py      the Python API, re-exported here: ``import anglecurate as ac; ac.score(...)``
    cli/        the `anglecurate` command, a thin layer over ``api``

Above them, loose, are the adapters' public import paths, ``trl`` and ``verl``, as
training scripts and verl configs name them.
"""

from anglecurate.base import __version__
from anglecurate.base.errors import UserError

API = (
    "score",
    "merge",
    "rank",
    "validate",
    "report",
    "schedule",
    "schedule_update",
    "read_ranking",
    "pilot",
    "calibrate",
    "ScoreResult",
    "ValidateResult",
    "ScheduleResult",
    "UpdateResult",
    "ReportResult",
    "CalibrateResult",
)
__all__ = ["UserError", "__version__", *API]


def __getattr__(name: str):
    # The API pulls in polars and rich: load it on first use, so `import anglecurate` (and
    # `anglecurate --help`) stays instant.
    if name in API:
        from anglecurate import api

        return getattr(api, name)
    raise AttributeError(f"module 'anglecurate' has no attribute {name!r}")
