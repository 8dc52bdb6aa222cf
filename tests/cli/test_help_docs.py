"""`--help` and docs/cli.md say the same thing about every option of every command.

The commands are read from the real app (``typer.main.get_command``), so a new command or
option is checked without being listed here. Each command ``anglecurate X`` has a section
in docs/cli.md, a heading ``## `anglecurate X` `` (any level), holding one options table
(``| option | default | meaning |``) before the next heading. The rules:

- **Names.** A row's option cell names options in backticks (`` `--w-intra`, `--w-inter` ``,
  `` `--quiet`, `-q` ``, `` `--ascending` / `--descending` ``). Every name in it is a name of
  one of the command's options, and a row names every name of each option it names (``-q``
  with ``--quiet``, ``--no-x`` with ``--x``). Every option is named in exactly one row.
  Arguments (``OUT``) are not options: the section's synopsis shows them.
- **Default.** ``required`` for a required option; else the option's ``show_default`` when
  it is a string (what ``--help`` prints as ``[default: ...]``; every option whose default is
  None or empty has one); else ``off`` for a flag that defaults to False; else the default
  itself (an Enum's value; numbers compare as numbers: ``1`` is 1.0). A row naming k options
  gives one default for all, or k defaults separated by ", ".
- **Meaning.** The meaning cell contains each named option's help text in the row's order,
  and starts with the first one, each ending where a word ends: compared without markdown
  (backticks, ``**``, links become their text), whitespace collapsed, case folded, the
  help's final full stop dropped. The help is the short form; the docs may go on after it.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest
import typer.main

from anglecurate.cli.app import app

DOCS = Path(__file__).resolve().parents[2] / "docs"
HEADER = "| option | default | meaning |"
HEADING = re.compile(r"^#+ `anglecurate ([a-z][a-z -]*)`\s*$")


def _commands() -> list[tuple[str, object]]:
    """("schedule update", click command) of every command and group with options of its own."""
    found = []

    def walk(command, path):
        if command.callback is not None and path:
            found.append((" ".join(path), command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def _sections(text: str) -> dict[str, list[str]]:
    """{command: lines of its section up to the next heading}; fenced code is skipped."""
    sections: dict[str, list[str]] = {}
    current, fenced = None, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            match = HEADING.match(line)
            current = match.group(1) if match else None
            if current is not None:
                assert current not in sections, f"two sections for `anglecurate {current}`"
                sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def options_table(lines: list[str]) -> list[tuple[list[str], str, str]]:
    """(names, default, meaning) of each row of the one options table in ``lines``."""
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADER]
    assert len(starts) == 1, f"{len(starts)} options tables (want one `{HEADER}`)"
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        option, default, meaning = _cells(line)
        rows.append((re.findall(r"`(-[^`]+)`", option), default, meaning))
    return rows


def plain(text: str) -> str:
    """Text without markdown, whitespace collapsed, case folded."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("`", "").replace("**", "").replace("\\|", "|")
    return " ".join(text.split()).casefold()


def expected_default(param) -> str | None:
    """What the default column must say (None: nothing it could say; a failure)."""
    if param.required:
        return "required"
    if isinstance(param.show_default, str):
        return param.show_default
    if param.is_flag and param.default is False:
        return "off"
    default = param.default
    if default is None or default == [] or default == ():
        return None
    return str(default.value if isinstance(default, Enum) else default)


def same_default(doc: str, want: str) -> bool:
    doc, want = plain(doc), plain(want)
    if doc == want:
        return True
    try:
        return float(doc.replace(",", "")) == float(want)
    except ValueError:
        return False


def _split_defaults(cell: str, k: int) -> list[str]:
    parts = [p.strip() for p in cell.split(", ")]
    return parts if k > 1 and len(parts) == k else [cell] * k


def drift(command, rows) -> list[str]:
    """Every way ``rows`` disagree with ``command``'s options, as lines."""
    options = [p for p in command.params if p.param_type_name == "option"]
    by_name = {name: p for p in options for name in (*p.opts, *p.secondary_opts)}
    problems, seen = [], {}
    for names, default, meaning in rows:
        row = " ".join(names) or "(no option named)"
        named = []
        for name in names:
            if name not in by_name:
                problems.append(f"row {row}: {name} is not an option")
            elif by_name[name] not in named:
                named.append(by_name[name])
        for param in named:
            missing = [n for n in (*param.opts, *param.secondary_opts) if n not in names]
            if missing:
                problems.append(f"row {row}: names {param.opts[0]} but not {', '.join(missing)}")
            seen.setdefault(param.name, []).append(row)
        for param, doc_default in zip(named, _split_defaults(default, len(named)), strict=True):
            want = expected_default(param)
            if want is None:
                problems.append(f"{param.opts[0]}: default {param.default!r} needs a show_default")
            elif not same_default(doc_default, want):
                problems.append(f"{param.opts[0]}: docs say default {doc_default!r}, --help {want!r}")
        text, at = plain(meaning), 0
        for i, param in enumerate(named):
            help_text = plain((param.help or "").rstrip().removesuffix("."))
            found = text.find(help_text, at)
            end = found + len(help_text)
            cut = end < len(text) and text[end].isalnum()  # "part" is not the start of "parts"
            if not help_text or found < 0 or (i == 0 and found != 0) or cut:
                problems.append(
                    f"{param.opts[0]}: meaning {meaning!r} does not start with its help {param.help!r}"
                )
            else:
                at = end
    for param in options:
        rows_of = seen.get(param.name, [])
        if len(rows_of) != 1:
            problems.append(f"{param.opts[0]} is in {len(rows_of)} rows of the table (want one)")
    return problems


COMMANDS = _commands()


def test_every_command_is_found():
    names = {name for name, _ in COMMANDS}
    assert {"score", "merge", "rank", "validate", "calibrate", "report", "inspect", "show"} <= names
    assert {"schedule", "schedule update", "pilot"} <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_the_options_table_matches_help(name, command):
    sections = _sections((DOCS / "cli.md").read_text())
    assert name in sections, f"docs/cli.md has no section `anglecurate {name}`"
    problems = drift(command, options_table(sections[name]))
    assert not problems, f"anglecurate {name}:\n" + "\n".join(problems)


def test_the_options_tables_live_in_cli_md_only():
    """One table per command, in one file: the other pages link to it."""
    others = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "cli.md" and HEADER in p.read_text()]
    assert others == []


def test_a_drifted_row_is_caught():
    """The rules catch each kind of drift: a changed default, a help reworded, an option
    left out, a row naming no real option."""
    command = dict(COMMANDS)["show"]
    assert drift(command, [(["-n"], "`5`", "rows to show at each end")]) == []
    assert drift(command, [(["-n"], "`6`", "rows to show at each end")])
    assert drift(command, [(["-n"], "`5`", "rows shown at each end")])
    assert drift(command, [(["-n"], "`5`", "rows to show at each ending")])
    assert drift(command, [])
    assert drift(command, [(["-n"], "`5`", "rows to show at each end"), (["--top"], "`5`", "x")])
