"""Usage mistakes on every command are one line and exit code 2, with nothing written: a
mistyped choice, an unknown option, a value of the wrong kind."""

from __future__ import annotations

import inspect
import typing
from enum import Enum

import pytest
import typer.main

from anglecurate.cli.app import app

from ..helpers import run_cli


def _commands() -> list[tuple[tuple[str, ...], object]]:
    """(path, click command) of every command and group with a function of its own."""
    found = []

    def walk(command, path):
        if command.callback is not None:
            found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def _choice_options() -> list[tuple[tuple[str, ...], str, list[str]]]:
    """(command path, option, choices) of every option annotated with an Enum, read from the
    commands' own functions: a new choice option is covered without being listed here."""
    options = []
    for path, command in _commands():
        hints = typing.get_type_hints(inspect.unwrap(command.callback))
        for param in command.params:
            hint = hints.get(param.name)
            if isinstance(hint, type) and issubclass(hint, Enum):
                options.append((path, param.opts[0], [m.value for m in hint]))
    return options


CHOICES = _choice_options()
COMMANDS = [path for path, _ in _commands() if path]


def _one_line(code, err) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_the_choice_options_are_found():
    found = {(" ".join(path), option) for path, option, _ in CHOICES}
    assert {("score", "--dtype"), ("score", "--on-long"), ("rank", "--nan-policy")} <= found
    assert ("validate", "--dtype") in found and len(found) >= 9


@pytest.mark.parametrize(("path", "option", "choices"), CHOICES, ids=lambda v: str(v))
def test_a_mistyped_choice_is_one_line_naming_the_choices(
    monkeypatch, capsys, tmp_path, path, option, choices
):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(monkeypatch, capsys, *path, option, "bf61")
    line = _one_line(code, err)
    assert line == f"error: unknown {option} 'bf61'; choose {', '.join(choices)}"
    assert out == "" and list(tmp_path.iterdir()) == []


def test_a_choice_given_with_equals_is_named_the_same(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "score", "--on-long=trunc", "--out", tmp_path / "o")
    assert _one_line(code, err) == "error: unknown --on-long 'trunc'; choose skip, truncate"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_one_line_for_every_command(monkeypatch, capsys, tmp_path, path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, *path, "--no-such-option")
    name = " ".join(["anglecurate", *path])
    assert _one_line(code, err) == (
        f"error: unknown option --no-such-option for `{name}`; `{name} --help` lists its options"
    )
    assert list(tmp_path.iterdir()) == []


def test_rank_quiet_and_a_typo_with_a_close_option(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "rank", tmp_path, "--quiet")
    assert "unknown option --quiet for `anglecurate rank`" in _one_line(code, err)
    code, _, err = run_cli(monkeypatch, capsys, "score", "--dtpye", "bf16")
    assert _one_line(code, err).endswith("did you mean --dtype?")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["score", "--chunk-rows", "abc"], ["--chunk-rows", "integer", "`anglecurate score --help`"]),
        (["score", "--model", "m"], ["Missing option '--data'"]),
        (["show"], ["Missing argument"]),
        (["show", "a", "b"], ["unexpected extra argument"]),
    ],
)
def test_other_usage_errors_are_one_line(monkeypatch, capsys, tmp_path, args, needles):
    monkeypatch.chdir(tmp_path)
    line = _one_line(*run_cli(monkeypatch, capsys, *args)[::2])
    for needle in needles:
        assert needle in line, line
    assert list(tmp_path.iterdir()) == []


def test_help_still_exits_0_and_a_bare_group_still_shows_its_help(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "rank", "--help")
    assert code == 0 and "--nan-policy" in out
    code, out, err = run_cli(monkeypatch, capsys, "schedule")
    assert code == 2 and "update" in out + err and "error:" not in err
