"""Public import path of the verl adapter, as verl configs name it
(``data.sampler.class_path=pkg://anglecurate.verl``); the code lives in
:mod:`anglecurate.scheduling.verl`."""

from anglecurate.scheduling.verl import GainRLSampler

__all__ = ["GainRLSampler"]
