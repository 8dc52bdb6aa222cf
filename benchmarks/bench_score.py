"""Benchmark: `score` against the bare forward pass and a batch-1 reference-style scorer.

All three run on the same prompts, rendered and segmented exactly as `anglecurate score`
does, and (for the first two) on the same length-bucketed batches:

- bare:      the base model's forward (all layers, no LM head, no hooks): the floor.
- score:     the same forward with the angle hooks on every layer (early stop after the
             deepest one), including the per-batch angle finish and copy to the host.
- reference: the authors' style: one prompt per pass through the full causal LM (LM head
             included), the last layer's MLP input kept and an L x L cosine matrix built.

Each timed pass is repeated (--repeats) and the best is kept, bare and score alternating so
drift hits both alike. Usage (from the repository root):

    .venv/bin/python benchmarks/bench_score.py --data ../shared/data/math_train.parquet \\
        --rows 256 --reference-rows 32 --dtype fp32 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:smollm2")
    ap.add_argument("--data", default="builtin:humaneval")
    ap.add_argument("--field", default="prompt")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--reference-rows", type=int, default=32)
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-batch-tokens", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from anglecurate.batching import collate, plan_batches
    from anglecurate.capture import angle_capture
    from anglecurate.config import ScoreConfig
    from anglecurate.manifest import versions
    from anglecurate.model import wrap_model
    from anglecurate.pipeline import plan, prepare_rows

    cfg = ScoreConfig(
        model=args.model,
        data=args.data,
        out="",
        field=args.field,
        dtype=args.dtype,
        device=args.device,
        max_batch_tokens=args.max_batch_tokens,
        skip_invalid=True,
    )
    p = plan(cfg)
    frame = next(iter(p.dataset.iter_chunks(args.rows)))[1]
    _, _, segmented = prepare_rows(frame, np.arange(frame.height), cfg, p)
    items = list(segmented.values())
    batches = [
        collate([items[i] for i in b], p.pad_id)
        for b in plan_batches([s.n_tokens for s in items], p.batch_tokens)
    ]
    n_tokens = sum(s.n_tokens for s in items)

    lm = (
        AutoModelForCausalLM.from_pretrained(p.source.directory, dtype=p.dtype, **p.source.load_kwargs)
        .eval()
        .to(p.device)
    )
    model = wrap_model(lm.base_model, p.model_config.num_hidden_layers)

    def sync():
        if p.device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def bare() -> float:
        sync()
        t = time.perf_counter()
        for b in batches:
            model.base(
                input_ids=b.input_ids.to(p.device),
                attention_mask=b.attention_mask.to(p.device),
                use_cache=False,
            )
        sync()
        return time.perf_counter() - t

    def scored() -> float:
        with angle_capture(model, list(range(model.num_layers))) as cap:
            sync()
            t = time.perf_counter()
            for b in batches:
                cap.run(b)
            sync()
            return time.perf_counter() - t

    @torch.inference_mode()
    def reference(n: int) -> tuple[float, int]:
        store = {}
        hook = model.mlps[-1].register_forward_hook(
            lambda _m, inp, _o: store.__setitem__("x", inp[0].detach())
        )
        try:
            sync()
            t = time.perf_counter()
            for s in items[:n]:
                lm(input_ids=torch.tensor([s.input_ids], device=p.device), use_cache=False)
                u = torch.nn.functional.normalize(store["x"][0].float(), dim=1)
                cos = (u @ u.T) * torch.tril(torch.ones(len(u), len(u), device=u.device), 1)
                _ = cos[s.n_prefix :].mean() + 8 * cos[s.n_prefix :][:, : s.n_prefix].mean()
            sync()
            return time.perf_counter() - t, sum(x.n_tokens for x in items[:n])
        finally:
            hook.remove()

    bare(), scored()  # warm-up: allocator, kernels, thread pools
    t_bare, t_score = [], []
    for _ in range(args.repeats):
        t_bare.append(bare())
        t_score.append(scored())
    t_ref, ref_tokens = reference(args.reference_rows)
    result = {
        "model": args.model,
        "data": args.data,
        "rows": len(items),
        "tokens": n_tokens,
        "batches": len(batches),
        "dtype": args.dtype,
        "device": str(p.device),
        "max_batch_tokens": p.batch_tokens,
        "layers": model.num_layers,
        "bare_tokens_per_s": n_tokens / min(t_bare),
        "score_tokens_per_s": n_tokens / min(t_score),
        "score_over_bare": min(t_bare) / min(t_score),
        "reference_tokens_per_s": ref_tokens / t_ref,
        "reference_rows": min(args.reference_rows, len(items)),
        "speedup_over_reference": (n_tokens / min(t_score)) / (ref_tokens / t_ref),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if p.device.type == "cuda" else None,
        },
        "versions": versions(),
    }
    print(json.dumps(result, indent=1))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
