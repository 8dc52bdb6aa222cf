"""The Gaussian sampler: distribution, centre updates, determinism, state round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from anglecurate.base.errors import UserError
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams


def test_epochs_are_distinct_sorted_and_centred_on_mu():
    sampler = GaussianSampler(10_000, 500, SamplerParams(sigma=300, mu0=5000), seed=1)
    ranks = sampler.next_epoch()
    assert len(set(ranks.tolist())) == 500 and (np.diff(ranks) > 0).all()
    assert abs(ranks.mean() - 5000) < 60  # 500 draws of sd ~300: mean within ~4 s.e.
    assert 200 < ranks.std() < 400


def test_draw_frequencies_match_the_gaussian_weights():
    # k=1 makes each draw a plain categorical draw with p proportional to the weights
    params = SamplerParams(sigma=2.0, mu0=3.0)
    sampler = GaussianSampler(8, 1, params, seed=0)
    counts = np.bincount([sampler.next_epoch()[0] for _ in range(20_000)], minlength=8)
    w = np.exp(-0.5 * ((np.arange(8) - 3.0) / 2.0) ** 2)
    assert np.abs(counts / counts.sum() - w / w.sum()).max() < 0.015


def test_update_follows_the_formula_and_clamps():
    p = SamplerParams()
    sampler = GaussianSampler(5000, 100, p)
    expected = min(max(500 * math.tanh(2 * (0.8 - 0.5)) + 500 * math.tanh(2 * 0.1), 0), 1000)
    assert sampler.update(0.8, 0.1) == pytest.approx(expected)
    before = sampler.mu
    assert sampler.update(0.0) == before  # negative move clamped to adj_min = 0
    for _ in range(20):
        sampler.update(1.0, 1.0)
    assert sampler.mu == 4999  # clamped at the end of the list, no NaN
    assert len(sampler.next_epoch()) == 100


def test_same_seed_and_feedback_give_the_same_schedule_and_state_restores():
    def run(sampler, epochs):
        out = []
        for e in range(epochs):
            out.append(sampler.next_epoch().tolist())
            sampler.update(0.3 + 0.1 * e, 0.05)
        return out

    a = GaussianSampler(3000, 64, SamplerParams(shuffle=True), seed=7)
    b = GaussianSampler(3000, 64, SamplerParams(shuffle=True), seed=7)
    assert run(a, 4) == run(b, 4)
    saved = json.loads(json.dumps(a.state_dict()))  # survives a JSON round trip
    tail_a = run(a, 3)
    restored = GaussianSampler.from_state_dict(saved)
    assert run(restored, 3) == tail_a
    assert restored.epoch == a.epoch and restored.mu == a.mu
    assert run(GaussianSampler(3000, 64, seed=8), 1) != run(GaussianSampler(3000, 64, seed=7), 1)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"num_items": 10, "per_epoch": 11}, "per-epoch"),
        ({"num_items": 0, "per_epoch": 1}, "empty"),
        ({"num_items": 10, "per_epoch": 2, "params": SamplerParams(sigma=0)}, "sigma"),
        ({"num_items": 10, "per_epoch": 2, "params": SamplerParams(adj_min=5, adj_max=1)}, "adj_min"),
    ],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        GaussianSampler(**kwargs)


def test_accuracy_must_be_normalised():
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        GaussianSampler(10, 2).update(2.0)


def test_defaults_scale_with_the_ranking_size():
    assert SamplerParams.for_size(7500) == SamplerParams()  # the authors' own MATH size
    small = SamplerParams.for_size(750, beta=0.6, sigma=None)
    assert (small.n, small.sigma, small.adj_max) == pytest.approx((50.0, 100.0, 100.0))
    assert (small.alpha, small.beta, small.adj_min, small.mu0) == (2.0, 0.6, 0.0, 0.0)
    assert SamplerParams.for_size(750, sigma=3.0).sigma == 3.0  # explicit values are verbatim
