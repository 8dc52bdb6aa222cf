"""Columns named on the command line (``--answer-field``, ``--difficulty-field``): a top-level
column or a struct field written dotted (``reward_model.ground_truth``, verl's layout), or,
when none is named, the first of a list of usual names that the data has.

Used by the commands that read a finished ranking back for measurement: validate's
reference answers and difficulty, calibrate's rewarded answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from anglecurate.base.errors import UserError

# Where a reference answer usually lives: plain columns, then verl's and others' struct fields.
ANSWER_FIELDS = ("answer", "solution", "reward_model.ground_truth", "extra_info.answer")


def column_expr(name: str) -> pl.Expr:
    """The polars expression of ``name``: a column, or a struct field per dotted part."""
    head, *rest = name.split(".")
    expr = pl.col(head)
    for field in rest:
        expr = expr.struct.field(field)
    return expr


def pick_column(
    given: str | None,
    candidates: Sequence[str],
    columns: Sequence[str],
    option: str,
    where: str = "the ranking",
) -> str | None:
    """The column ``option`` names (refused in one line, listing ``columns``, when its first
    dotted part is not one of them), else the first of ``candidates`` present, else None."""
    if given is not None:
        if given.split(".")[0] not in columns:
            raise UserError(f"{option} {given!r} is not a column of {where}; columns: {', '.join(columns)}")
        return given
    return next((c for c in candidates if c.split(".")[0] in columns), None)


def answer_column(
    given: str | None, columns: Sequence[str], where: str, option: str = "--answer-field"
) -> str:
    """The reference-answer column: ``given`` or the first of :data:`ANSWER_FIELDS` present;
    one line naming the columns there are and ``option`` when there is none."""
    found = pick_column(given, ANSWER_FIELDS, columns, option, where)
    if found is None:
        raise UserError(
            f"{where} has no reference answers (looked for {', '.join(ANSWER_FIELDS)}); its columns: "
            f"{', '.join(columns)}; pass {option} COLUMN (a struct field dotted: reward_model.ground_truth)"
        )
    return found
