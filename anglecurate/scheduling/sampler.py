"""GAIN-RL's Gaussian sampler over a ranking: pure, seeded, serialisable.

Items are ranks 0..N-1 (rank 0 = highest angle concentration). Each epoch draws ``k``
distinct ranks without replacement with probability proportional to
``exp(-0.5 ((i - mu) / sigma)^2)``; after the epoch the centre moves by

    mu <- mu + clamp(n tanh(alpha (acc - beta)) + n tanh(alpha angle), adj_min, adj_max)

with ``acc`` the epoch's mean accuracy in [0, 1] and ``angle`` its mean angle signal. The
authors' defaults (n=500, alpha=2, beta=0.5, adj_min=0, adj_max=1000, sigma=1000, mu_0=0)
were set for MATH's 7,500 training rows; ``SamplerParams.for_size`` scales the three
lengths measured in ranks (n, adj_max, sigma) by N / 7500, so the window covers the same
fraction of any list and moves across it at the same pace. ``mu`` is clamped to [0, N-1]:
past the end of the list the Gaussian keeps sampling the last (lowest-score) ranks, never NaN.

Sampling without replacement uses the Gumbel top-k trick on log-weights: keys
``log w_i + G_i`` with G_i standard Gumbel, keep the k largest. That is exactly successive
sampling proportional to w, needs no normalisation, and cannot underflow however far an
item is from ``mu``. The generator is numpy's PCG64, whose state is a JSON-able dict, so
``state_dict()`` restores the schedule bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from anglecurate.base.errors import UserError

# The GAIN-RL authors tuned their defaults on MATH's training split.
AUTHORS_ROWS = 7500


@dataclass(frozen=True)
class SamplerParams:
    """Hyperparameters of the sampler (the authors' defaults)."""

    n: float = 500.0
    alpha: float = 2.0
    beta: float = 0.5
    adj_min: float = 0.0
    adj_max: float = 1000.0
    sigma: float = 1000.0
    mu0: float = 0.0
    shuffle: bool = False  # False: each epoch is fed in rank order, as the authors do

    @classmethod
    def for_size(cls, num_items: int, **overrides) -> SamplerParams:
        """The authors' defaults rescaled from their 7,500 rows to ``num_items``; ``overrides``
        (None values ignored) are taken verbatim."""
        scale = num_items / AUTHORS_ROWS
        base = cls()
        scaled = replace(base, n=base.n * scale, adj_max=base.adj_max * scale, sigma=base.sigma * scale)
        return replace(scaled, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        if not self.sigma > 0:
            raise UserError(f"sigma must be positive, got {self.sigma}")
        if self.adj_min > self.adj_max:
            raise UserError(f"adj_min ({self.adj_min}) is larger than adj_max ({self.adj_max})")
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{name} must be finite, got {value}")


class GaussianSampler:
    """Draws epochs of ``per_epoch`` distinct ranks out of ``num_items``; see module docs."""

    def __init__(self, num_items: int, per_epoch: int, params: SamplerParams | None = None, seed: int = 0):
        params = params or SamplerParams()
        params.validate()
        if num_items < 1:
            raise UserError("the ranking is empty")
        if not 1 <= per_epoch <= num_items:
            raise UserError(f"per-epoch size {per_epoch} must be between 1 and the {num_items} ranked rows")
        self.num_items = num_items
        self.per_epoch = per_epoch
        self.params = params
        self.seed = seed
        self.mu = self._clamp_mu(params.mu0)
        self.epoch = 0
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def _clamp_mu(self, mu: float) -> float:
        return float(min(max(mu, 0.0), self.num_items - 1))

    def next_epoch(self) -> np.ndarray:
        """The next epoch's ranks: int64 [per_epoch], in rank order unless ``shuffle``."""
        ranks = np.arange(self.num_items, dtype=np.float64)
        log_w = -0.5 * ((ranks - self.mu) / self.params.sigma) ** 2
        keys = log_w + self._rng.gumbel(size=self.num_items)
        chosen = np.argpartition(-keys, self.per_epoch - 1)[: self.per_epoch]
        chosen = np.sort(chosen)
        if self.params.shuffle:
            chosen = self._rng.permutation(chosen)
        self.epoch += 1
        return chosen.astype(np.int64)

    def step(self, accuracy: float, angle: float = 0.0) -> float:
        """The centre's move for an epoch's mean accuracy (in [0, 1]) and mean angle."""
        if not 0.0 <= accuracy <= 1.0:
            raise UserError(f"accuracy must be in [0, 1] (normalise rewards first), got {accuracy}")
        if not math.isfinite(angle):
            raise UserError(f"angle must be finite, got {angle}")
        p = self.params
        move = p.n * math.tanh(p.alpha * (accuracy - p.beta)) + p.n * math.tanh(p.alpha * angle)
        return min(max(move, p.adj_min), p.adj_max)

    def update(self, accuracy: float, angle: float = 0.0) -> float:
        """Move the centre after an epoch; returns the new ``mu``."""
        self.mu = self._clamp_mu(self.mu + self.step(accuracy, angle))
        return self.mu

    def shift(self, delta: float) -> float:
        """Move the centre by a fixed amount (open-loop schedules); returns the new ``mu``."""
        self.mu = self._clamp_mu(self.mu + delta)
        return self.mu

    def state_dict(self) -> dict:
        return {
            "num_items": self.num_items,
            "per_epoch": self.per_epoch,
            "params": asdict(self.params),
            "seed": self.seed,
            "mu": self.mu,
            "epoch": self.epoch,
            "rng": self._rng.bit_generator.state,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> GaussianSampler:
        sampler = cls(state["num_items"], state["per_epoch"], SamplerParams(**state["params"]), state["seed"])
        sampler.load_state_dict(state)
        return sampler

    def load_state_dict(self, state: dict) -> None:
        self.mu = float(state["mu"])
        self.epoch = int(state["epoch"])
        self._rng.bit_generator.state = state["rng"]
