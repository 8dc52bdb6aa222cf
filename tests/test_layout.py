"""The package layout: no import cycles between modules, and the public import paths that
training scripts and verl configs name keep pointing at the adapters."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import anglecurate

ROOT = Path(anglecurate.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """anglecurate modules imported by ``path`` (at any depth: a lazy import inside a
    function still makes a cycle a reader has to untangle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anglecurate"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {n for n in names if n in modules} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("anglecurate")}
    return found & modules


def test_no_module_imports_itself_back():
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
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


def test_every_capability_says_what_lives_there():
    for init in ROOT.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init} has no docstring"
        modules = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
        missing = {m for m in modules if m not in doc}
        assert not missing, f"{init.parent.name}/__init__.py does not mention {sorted(missing)}"
