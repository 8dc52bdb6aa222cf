"""Batch plans under a token budget: which items go through one forward together.

Items are sorted by length (longest first, so an out-of-memory batch shows up at the start
of a run, not at the end) and packed greedily. Sorting keeps padding small; the budget
bounds activation memory whatever the length distribution. Pure: lengths in, index lists
out. Scoring plans its prefill batches with it, generation its ``generate`` batches (each
length there is the prompt plus the tokens it may still generate).
"""

from __future__ import annotations


def plan_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Group indices into batches whose padded size (count x longest) fits the budget.

    A single item longer than the budget gets a batch of its own. Ties in length keep
    their input order, so a plan is a pure function of the lengths.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def plan_packed(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Group indices into packed batches whose total length fits the budget (longest
    first, as :func:`plan_batches`); an item longer than the budget goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in order:
        if current and total + lengths[i] > max_batch_tokens:
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += lengths[i]
    if current:
        batches.append(current)
    return batches
