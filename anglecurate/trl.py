"""Public import path of the TRL adapter (``from anglecurate.trl import ...`` in training
scripts); the code lives in :mod:`anglecurate.schedule.trl`."""

from anglecurate.schedule.curriculum import Curriculum
from anglecurate.schedule.trl import EpochRepeatSampler, GainRLGRPOTrainer, track

__all__ = ["Curriculum", "EpochRepeatSampler", "GainRLGRPOTrainer", "track"]
