"""The package layout: floors that only point down, no import cycles, docstrings that name
exactly the modules beside them, and the public import paths training scripts and verl
configs name."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types
from pathlib import Path

import pytest

import anglecurate

ROOT = Path(anglecurate.__file__).parent
# The adapters' public import paths and the entry point: above every floor.
TOP = {"trl", "verl", "__main__"}
MAX_LOOSE = 4  # loose modules at the top besides __init__ and __main__


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """anglecurate modules imported by ``path`` (at any depth: a lazy import inside a
    function still points somewhere a reader has to follow)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anglecurate"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {n for n in names if n in modules} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("anglecurate")}
    return found & modules


def _files() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def floors() -> list[str]:
    """The floor order, bottom first, as the package docstring writes it (``    name/`` for
    a folder, ``    name.py`` for a loose module that is a floor of its own, like ``api``)."""
    return re.findall(r"^    (\w+)(?:/|\.py)", anglecurate.__doc__, flags=re.M)


def floor_of(module: str, order: list[str]) -> int:
    """The floor index of ``module``: its first subpackage's place in ``order``; the root
    package and the loose top modules are above every floor."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in TOP:
        return len(order)
    return order.index(parts[1])


def upward_imports(files: dict[str, Path], order: list[str]) -> list[str]:
    modules = set(files)
    bad = []
    for name, path in sorted(files.items()):
        here = floor_of(name, order)
        for dep in sorted(_imports(path, modules)):
            if floor_of(dep, order) > here:
                bad.append(f"{name} imports {dep}")
    return bad


def test_every_folder_is_a_floor_and_the_top_is_small():
    order = floors()
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    loose = {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    floor_modules = loose - TOP
    assert folders | floor_modules == set(order), (
        f"not in the package docstring's floors: {(folders | floor_modules) ^ set(order)}"
    )
    assert len(loose - {"__main__"}) <= MAX_LOOSE, f"too many loose modules: {sorted(loose)}"


def test_calibration_sits_on_what_it_uses_and_under_the_pilot():
    # calibrate rolls out through generation, on a ranking scoring wrote, beside validate; the
    # pilot's calibrated and pass-rate arms call it, so it must sit below them.
    order = floors()
    assert order.index("evidence") < order.index("calibration") < order.index("scheduling")
    assert order.index("calibration") < order.index("piloting")


def test_generation_sits_between_the_model_and_its_users():
    # Evaluation and rollouts generate with a model and grade with a reward; scoring and the
    # pilot above them use it.
    order = floors()
    assert max(order.index("model"), order.index("rewards")) < order.index("generation")
    assert order.index("generation") < order.index("scoring") < order.index("piloting")


def test_imports_only_point_down_the_floors():
    bad = upward_imports(_files(), floors())
    assert not bad, "imports that point up the floors:\n" + "\n".join(bad)


def test_the_floor_check_catches_an_upward_import(tmp_path):
    # The check itself can fail: a data module that imports scoring is caught.
    files = _files()
    fake = tmp_path / "anglecurate" / "data" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from anglecurate.scoring.store import OutputDir\n")
    files["anglecurate.data.bad"] = fake
    assert upward_imports(files, floors()) == ["anglecurate.data.bad imports anglecurate.scoring.store"]


ABOVE_GENERATION = (
    "scoring",
    "evidence",
    "calibration",
    "scheduling",
    "reporting",
    "piloting",
    "scale",
    "cli",
)


@pytest.mark.parametrize(
    ("floor", "forbidden"),
    [
        ("data", {"generation", *ABOVE_GENERATION}),
        ("model", {"generation", *ABOVE_GENERATION}),
        # generation serves evaluation and rollouts; it knows models and rewards, not rankings
        (
            "generation",
            {"scoring", "evidence", "calibration", "scheduling", "reporting", "piloting", "scale", "cli"},
        ),
        ("scoring", {"evidence", "calibration", "scheduling", "reporting", "piloting", "scale", "cli"}),
        # calibrate rolls out and fits on a ranking; schedules, reports and pilots read what it wrote
        ("calibration", {"scheduling", "reporting", "piloting", "scale", "cli"}),
        *[
            (
                f,
                {
                    "data",
                    "model",
                    "generation",
                    "scoring",
                    "evidence",
                    "calibration",
                    "scheduling",
                    "reporting",
                }
                | {"piloting", "scale", "cli"},
            )
            for f in ("base", "storage", "sources", "stats", "rewards")
        ],
    ],
)
def test_lower_floors_import_nothing_above_them(floor, forbidden):
    files = _files()
    for name, path in files.items():
        if name.split(".")[1:2] == [floor]:
            reached = {d.split(".")[1] for d in _imports(path, set(files)) if d.count(".")}
            assert not reached & forbidden, f"{name} imports {sorted(reached & forbidden)}"


def test_no_module_imports_itself_back():
    files = _files()
    packages = {name for name, p in files.items() if p.name == "__init__.py"}
    graph = {name: _imports(p, set(files)) - {name} for name, p in files.items()}
    graph = {name: deps - packages for name, deps in graph.items()}  # a package's docstring is no edge
    cycles, done = [], set()

    def visit(name, stack):
        if name in stack:
            cycles.append(stack[stack.index(name) :] + [name])
            return
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, stack + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_the_kernel_does_not_import_its_dispatcher():
    kernel = _imports(ROOT / "scoring" / "angles" / "kernel.py", {"anglecurate.scoring.angles.dispatch"})
    assert not kernel


def listed_modules(doc: str) -> set[str]:
    """The names a package docstring lists as its contents: a word (or ``a, b`` pair) that
    starts an indented-or-not line and is followed by two spaces or a line end, the way
    every capability lays out its module table."""
    names = set()
    for line in doc.splitlines():
        m = re.match(r"^\s*((?:\w+/?)(?:,\s*\w+)*)(?:\s{2,}|$)", line)
        if m:
            names |= {n.strip().rstrip("/") for n in m.group(1).split(",")}
    return names


@pytest.mark.parametrize("init", sorted(ROOT.rglob("*/__init__.py")), ids=lambda p: p.parent.name)
def test_every_capability_lists_exactly_its_modules(init):
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"{init} has no docstring"
    modules = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in init.parent.glob("*/__init__.py")}
    listed = listed_modules(doc)
    missing = modules - listed
    assert not missing, f"{init.parent.name}/__init__.py does not list {sorted(missing)}"


def test_the_docstring_check_needs_the_name_in_the_table():
    # "run" in a sentence does not count as listing a module named run.
    assert "run" not in listed_modules("every run of a pilot, then its table")
    assert {"run", "plan"} <= listed_modules("plan      the settings\nrun       every run")
    assert {"trl", "verl"} <= listed_modules("trl, verl    thin adapters")


def test_the_readme_module_map_names_every_floor():
    readme = (ROOT.parent / "README.md").read_text()
    block = readme[readme.index("```\nanglecurate/") :]
    block = block[: block.index("```", 4)]
    for floor in floors():
        assert re.search(rf"^  {floor}(/|\.py)", block, flags=re.M), f"README module map lacks {floor}"


def test_public_import_paths_name_the_adapters():
    verl = importlib.import_module("anglecurate.verl")  # pkg://anglecurate.verl in verl configs
    trl = importlib.import_module("anglecurate.trl")
    from anglecurate.scheduling import curriculum
    from anglecurate.scheduling import trl as trl_adapter

    if importlib.util.find_spec("verl") is not None:
        from anglecurate.scheduling import verl_dataset

        assert verl.GainRLDataset is verl_dataset.GainRLDataset
    if importlib.util.find_spec("verl.experimental.dataset") is not None:  # verl 0.5 to 0.7
        from anglecurate.scheduling import verl as verl_adapter

        assert verl.GainRLSampler is verl_adapter.GainRLSampler
    elif importlib.util.find_spec("verl") is not None:  # verl 0.8+: named, it says what to use
        with pytest.raises(ImportError, match="GainRLDataset"):
            verl.GainRLSampler  # noqa: B018
    assert trl.GainRLGRPOTrainer is trl_adapter.GainRLGRPOTrainer
    assert trl.track is trl_adapter.track
    assert trl.Curriculum is curriculum.Curriculum


def test_no_subpackage_shadows_an_api_name():
    # `import anglecurate.X.y` binds the subpackage X as an attribute of anglecurate, which
    # would then hide the API function of the same name (`ac.pilot` was the pilot package
    # once anything had imported it).
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert not packages & set(anglecurate.API), packages & set(anglecurate.API)
    for name in packages:
        importlib.import_module(f"anglecurate.{name}")
    for name in anglecurate.API:
        assert not isinstance(getattr(anglecurate, name), types.ModuleType), name
