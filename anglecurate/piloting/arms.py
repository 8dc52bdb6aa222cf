"""The arms of a pilot: which order of the training rows each one walks, and how.

    uniform       TRL's own shuffled sampling (``GRPOTrainer`` unchanged): the baseline
    gainrl        GAIN-RL's closed loop over the angle ranking: the Gaussian window moves
                  after each epoch by the epoch's accuracy and training-time angle
    gainrl-open   the open-loop schedule over the angle ranking: the window walks from
                  the first rank to the last in equal steps across the run
    length        shortest question first (in tokens), walked by the same closed loop: the
                  confound an angle order must beat (the score tracks length)
    reverse       the angle ranking upside down, same closed loop
    calibrated    the predicted pass rate (``p_pass``) of a calibration on a sample of the
                  training rows, easiest first, same closed loop
    pass-rate     the pass rate measured by rollouts on every training row (the offline
                  difficulty AdaRFT and POLARIS use), easiest first, same closed loop

The last two pay for their order in generated tokens before training
(:mod:`anglecurate.piloting.measured`); :attr:`Order.tokens` and :attr:`Order.seconds` carry
that cost into the run's curve, so it is counted against the arm.

Every ordered arm uses the authors' sampler defaults scaled to the training rows
(:meth:`anglecurate.scheduling.sampler.SamplerParams.for_size`) and the same epoch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.scheduling.curriculum import Curriculum
from anglecurate.scheduling.sampler import SamplerParams


@dataclass(frozen=True)
class Order:
    """An ordered arm's walk: uids in rank order (rank 0 first), closed or open loop; what
    measuring the order generated (``tokens``) and took (``seconds``): 0 for orders read off
    the prefill or the text."""

    uids: list[str]
    closed_loop: bool
    rank_layer: int | None
    tokens: int = 0
    seconds: float = 0.0


def length_order(train: pl.DataFrame, field: str, tokenizer) -> list[str]:
    """Training uids by question length in tokens, shortest first (ties: input order)."""
    texts = [value if isinstance(value, str) else str(value) for value in train[field].to_list()]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    return [train["uid"][i] for i in order]


def easiest_first(train_uids: list[str], pass_rate: dict[str, float]) -> list[str]:
    """The training uids that have a pass rate, highest (easiest) first; ties keep the
    training rows' order. (A row scoring skipped has none; the window walks the others, as
    over the angle ranking.)"""
    return sorted((u for u in train_uids if u in pass_rate), key=lambda u: -pass_rate[u])


def ranking_order(ranking, train: pl.DataFrame) -> list[str]:
    """The ranking's uids (rank 0 first) that are training rows; refuses another dataset's."""
    uids = [str(u) for u in ranking.uids.to_list()]
    train_uids = set(train["uid"].to_list())
    kept = [u for u in uids if u in train_uids]
    if len(kept) < 0.9 * len(train_uids):
        raise UserError(
            f"the ranking at {ranking.path} covers {len(kept)} of the {len(train_uids)} training rows: it "
            "ranks another dataset (or other uids); score this --data with the same --id-field, "
            "or drop --ranking"
        )
    return kept


def build_orders(arms, ranking, train: pl.DataFrame, field: str, tokenizer) -> dict[str, Order]:
    """The order of every ordered arm (uniform has none)."""
    orders = {}
    angle = ranking_order(ranking, train) if ranking is not None else None
    layer = ranking.identity["ranking"].get("layer") if ranking is not None else None
    for arm in arms:
        if arm in ("gainrl", "gainrl-open"):
            orders[arm] = Order(angle, arm == "gainrl", layer)
        elif arm == "reverse":
            orders[arm] = Order(angle[::-1], True, layer)
        elif arm == "length":
            orders[arm] = Order(length_order(train, field, tokenizer), True, layer)
    return orders


def curriculum_for(order: Order, train_uids: list[str], per_epoch: int, epochs: int, seed: int) -> Curriculum:
    """The arm's curriculum over the training rows; the open loop steps the centre from
    the first rank to the last over ``epochs`` epochs."""
    params = SamplerParams.for_size(len(order.uids))
    open_loop = None
    if not order.closed_loop:
        step = (len(order.uids) - 1) / max(epochs - 1, 1)
        open_loop = {"step": step, "assume_accuracy": None, "assume_angle": 0.0}
    return Curriculum.from_order(
        order.uids, train_uids, per_epoch, params, seed=seed, open_loop=open_loop, rank_layer=order.rank_layer
    )


def epochs_in(steps: int, prompts_per_step: int, per_epoch: int) -> int:
    return math.ceil(steps * prompts_per_step / per_epoch)
