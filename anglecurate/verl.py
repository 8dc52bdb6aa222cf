"""Public import path of the verl adapters, as verl configs name it (``pkg://anglecurate.verl``).

- ``GainRLDataset`` (verl 0.7 to 0.9): ``data.custom_cls.path=pkg://anglecurate.verl``,
  ``data.custom_cls.name=GainRLDataset``; code in :mod:`anglecurate.scheduling.verl_dataset`.
- ``GainRLSampler`` (verl 0.5 to 0.7): ``data.sampler.class_path=pkg://anglecurate.verl``,
  ``data.sampler.class_name=GainRLSampler``; code in :mod:`anglecurate.scheduling.verl`.

Each is imported when first named, because each needs an API that the other's verl
versions lack: naming one that the installed verl cannot support raises an ImportError that
says which versions it needs (verl's own loader passes it on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for readers and type checkers; at run time each is imported when named
    from anglecurate.scheduling.verl import GainRLSampler
    from anglecurate.scheduling.verl_dataset import GainRLDataset

__all__ = ["GainRLDataset", "GainRLSampler"]


def __getattr__(name: str):
    if name == "GainRLDataset":
        from anglecurate.scheduling.verl_dataset import GainRLDataset

        return GainRLDataset
    if name == "GainRLSampler":
        from anglecurate.scheduling.verl import GainRLSampler

        return GainRLSampler
    raise AttributeError(f"module 'anglecurate.verl' has no attribute {name!r}")
