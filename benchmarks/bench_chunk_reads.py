"""Benchmark: reading chunks one at a time (`--engine ray`) from a large JSONL, and scoring it.

Two parts, both on a JSONL of ``--rows`` MATH problems (math_train.json's rows repeated,
each with a unique id, ``"id"`` and ``"problem"`` columns):

- reads:  the data layer alone. ``stream`` is iter_chunks (a local run's reads);
          ``skip`` is what a Ray actor did before read_chunk existed (chunk i = iter_chunks
          with every other chunk skipped; unpacking that one-item generator reads the whole
          file, so each chunk costs a full pass), timed on every chunk (or the first
          ``--skip-chunks``, scaled up); ``read_chunk`` is every chunk in reverse order through the cached
          byte offsets (its first call includes the one pass that finds them).
- score:  ``anglecurate score`` of the whole file with a tiny random Llama (3 layers,
          d=64, SmolLM2's tokenizer, written to --model-dir), ``--engine local`` and
          ``--engine ray --num-workers N``, each in a fresh process and a fresh OUT, timed
          wall clock (model load, Ray start-up and the merge included). ``--score`` picks
          which (``local,ray``; ``none`` skips scoring).

Usage (from the repository root; PYTHONPATH=. to time this checkout):

    PYTHONPATH=. .venv/bin/python benchmarks/bench_chunk_reads.py --rows 100000 \\
        --workdir /tmp/bench-chunks --json bench-chunks.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--skip-chunks", type=int, default=0, help="chunks timed on the old path (0: all)")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--score", default="local,ray")
    ap.add_argument("--source", default=str(HERE.parents[1] / "shared" / "data" / "math_train.json"))
    ap.add_argument("--workdir", default="/tmp/bench-chunks")
    ap.add_argument("--model-dir", default=None, help="default: WORKDIR/tiny-llama")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(Path(args.source), work / f"math-{args.rows}.jsonl", args.rows)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs".strip(),
        "python": platform.python_version(),
        "data": {"path": str(data), "rows": args.rows, "bytes": data.stat().st_size},
        "chunk_rows": args.chunk_rows,
        "reads": time_reads(data, args.chunk_rows, args.skip_chunks),
    }
    print(json.dumps(result["reads"], indent=1), flush=True)
    engines = [e for e in args.score.split(",") if e and e != "none"]
    if engines:
        model = build_model(Path(args.model_dir or work / "tiny-llama"))
        result["score"] = {}
        for engine in engines:
            result["score"][engine] = time_score(engine, model, data, work / f"out-{engine}", args)
            print(engine, json.dumps(result["score"][engine]), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1))


def build_data(source: Path, path: Path, rows: int) -> Path:
    if path.exists():
        return path
    problems = [r["problem"] for r in json.loads(source.read_text())]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "problem": problems[i % len(problems)]}) + "\n")
    return path


def build_model(out: Path) -> Path:
    """The tests' tiny random Llama (tests/conftest.py): 3 layers, d=64, SmolLM2's tokenizer."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from anglecurate.sources.builtin import resolve_builtin_model

    gguf = resolve_builtin_model("builtin:smollm2")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def time_reads(data: Path, chunk_rows: int, skip_chunks: int) -> dict:
    from anglecurate.data.dataset import open_dataset

    t = time.perf_counter()
    ds = open_dataset(data)
    opened = time.perf_counter() - t
    n_chunks = -(-ds.num_rows // chunk_rows)

    t = time.perf_counter()
    for _ in ds.iter_chunks(chunk_rows):
        pass
    stream = time.perf_counter() - t

    # The old actor path: chunk i alone by skipping the others. Unpacking the one-item
    # generator exhausts it, so every chunk costs a pass over the whole file (read, not parsed).
    t = time.perf_counter()
    k = min(skip_chunks or n_chunks, n_chunks)
    for i in range(k):
        ((_, _),) = ds.iter_chunks(chunk_rows, skip=set(range(n_chunks)) - {i})
    skip_s = time.perf_counter() - t
    out = {
        "open_s": round(opened, 3),
        "chunks": n_chunks,
        "iter_chunks_all_s": round(stream, 3),
        "skip_chunks_timed": k,
        "skip_chunks_timed_s": round(skip_s, 3),
        "skip_all_chunks_s": round(skip_s * n_chunks / k, 1),  # measured when k == chunks
    }
    if hasattr(ds, "read_chunk"):
        t = time.perf_counter()
        ds.read_chunk(n_chunks - 1, chunk_rows)  # builds the offsets: one pass, no parsing
        first = time.perf_counter() - t
        t = time.perf_counter()
        for i in reversed(range(n_chunks)):
            ds.read_chunk(i, chunk_rows)
        out["read_chunk_first_call_s"] = round(first, 3)
        out["read_chunk_all_reversed_s"] = round(time.perf_counter() - t, 3)
    return out


def time_score(engine: str, model: Path, data: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "anglecurate", "score", "--model", str(model), "--data", str(data)]
    cmd += ["--out", str(out), "--overwrite", "--field", "problem", "--id-field", "id", "--dtype", "fp32"]
    cmd += ["--device", "cpu", "--chunk-rows", str(args.chunk_rows), "--json", "--engine", engine]
    if engine == "ray":
        cmd += ["--num-workers", str(args.num_workers)]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "wall_s": round(wall, 1)}
    summary = json.loads(done.stdout)
    return {"wall_s": round(wall, 1), "command": " ".join(cmd), "summary": summary}


if __name__ == "__main__":
    main()
