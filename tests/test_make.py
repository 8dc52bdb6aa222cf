"""`make setup` installs what the documented commands need: a fresh clone runs the README's
pilot (TRL) and reads hub datasets without a further `pip install`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import anglecurate

ROOT = Path(anglecurate.__file__).resolve().parents[1]
# Named in a message but installed by hand where it is documented: a Ray cluster's own
# install (docs/scale-out.md), too large for every setup.
BY_HAND = {"ray"}


def setup_extras() -> set[str]:
    """The extras the Makefile's setup recipe installs with the package."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0]
    groups = re.findall(r"pip install [^\n]*-e '?\.\[([\w,-]+)\]", recipe)
    return {extra for group in groups for extra in group.split(",")}


def test_setup_installs_the_pilots_trainer_and_the_hub_datasets_reader():
    from anglecurate.piloting.run import TRAINER_MODULES

    extras = setup_extras()
    assert {extra for _, extra in TRAINER_MODULES} <= extras
    assert "datasets" in extras
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared)


def test_every_extra_a_message_asks_for_is_installed_by_setup():
    """A command that stops with "pip install 'anglecurate[X]'" must not do so after `make setup`."""
    asked = set()
    for path in (ROOT / "anglecurate").rglob("*.py"):
        asked |= set(re.findall(r"anglecurate\[(\w+)\]", path.read_text()))
    assert asked, "no message names an extra: the search is wrong"
    assert asked - BY_HAND <= setup_extras()
