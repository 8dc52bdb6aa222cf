"""Command-line usage mistakes as one line: a mistyped choice, an unknown option, a missing
or malformed value.

Typer reports these in a multi-line box. :func:`anglecurate.cli.app.main` runs the app with
``standalone_mode=False``, so every command's usage errors reach it as exceptions, and
:func:`usage_line` words each in one line (exit code 2)::

    unknown --dtype 'bf61'; choose auto, bf16, fp32, fp16
    unknown option --quiet for `anglecurate rank`; `anglecurate rank --help` lists its options

A choice option is one annotated with an :class:`~enum.Enum` in the command's signature, so
a new option of that kind is covered without being listed anywhere.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from enum import Enum

import typer

# click's UsageError, or from typer 0.2x on its vendored copy of click: BadParameter's base
# in both, and the class of every usage error (unknown option, bad value, missing value).
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def is_help_request(exc: Exception) -> bool:
    """A group or command run with no arguments: its help, not an error (click's
    ``no_args_is_help``)."""
    return type(exc).__name__ == "NoArgsIsHelpError"


def usage_line(exc: Exception, args: list[str]) -> str:
    """One line for a usage error raised while parsing ``args`` (the command line)."""
    ctx = getattr(exc, "ctx", None)
    command = command_name(ctx)
    param = getattr(exc, "param", None)
    choices = choice_enum(ctx, param)
    if choices is not None:
        option, value = given_value(args, [*param.opts, *param.secondary_opts])
        values = ", ".join(str(m.value) for m in choices)
        if value is not None:
            return f"unknown {option} {value!r}; choose {values}"
        return f"{option} takes one of {values}"
    unknown = getattr(exc, "option_name", None)
    if unknown is not None:
        known = [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts)] if ctx else []
        close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.8)  # a typo, not a guess
        advice = f"did you mean {close[0]}?" if close else f"`{command} --help` lists its options"
        return f"unknown option {unknown} for `{command}`; {advice}"
    message = " ".join(exc.format_message().split())  # one line, whatever typer's wrapping
    return f"{message} (see `{command} --help`)"


def command_name(ctx) -> str:
    """``anglecurate schedule update``, say: the command as typed, whatever the program name."""
    names = []
    while ctx is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["anglecurate", *reversed(names[:-1])])


def choice_enum(ctx, param) -> type[Enum] | None:
    """The Enum a choice option is annotated with in its command's function, else None."""
    if ctx is None or param is None or not param.name or ctx.command.callback is None:
        return None
    function = inspect.unwrap(ctx.command.callback)  # typer wraps the function it was given
    try:
        hint = typing.get_type_hints(function).get(param.name)
    except (NameError, TypeError):  # an annotation that does not resolve: no choice list
        return None
    return hint if isinstance(hint, type) and issubclass(hint, Enum) else None


def given_value(args: list[str], opts: list[str]) -> tuple[str, str | None]:
    """The last value ``args`` give to an option named ``opts`` (``--x v`` or ``--x=v``),
    with the name it was given under; (the first name, None) when none is found."""
    found: tuple[str, str | None] = (opts[0], None)
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                found = (opt, args[i + 1])
            elif arg.startswith(opt + "=") and opt.startswith("--"):
                found = (opt, arg[len(opt) + 1 :])
    return found
