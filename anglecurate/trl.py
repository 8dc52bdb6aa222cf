"""Public import path of the TRL adapter (``from anglecurate.trl import ...`` in training
scripts); the code lives in :mod:`anglecurate.scheduling.trl`."""

from anglecurate.scheduling.curriculum import Curriculum
from anglecurate.scheduling.trl import EpochRepeatSampler, GainRLGRPOTrainer, track

__all__ = ["Curriculum", "EpochRepeatSampler", "GainRLGRPOTrainer", "track"]
