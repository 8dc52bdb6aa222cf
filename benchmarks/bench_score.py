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

GPU options: ``--packing`` (one packed sequence per batch; pair it with
``--attn-implementation flash_attention_2`` or ``flex_attention`` for padding-free
attention), ``--shape qwen2.5-0.5b|qwen2.5-1.5b`` (random weights with that model's exact
shapes, built from a config on the device: no download; tokens come from --model's
tokenizer; ``smollm2-135m`` is the built-in model's shape, for a machine without the GGUF), and
``--kernel`` (the segment reduction alone: kernel vs PyTorch reference, error, time and
bandwidth against a device copy). With a measured bf16 matmul rate the result also gives
model FLOPs utilisation (2 x non-embedding parameters x tokens, plus causal attention).
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
    ap.add_argument("--packing", action="store_true")
    ap.add_argument("--attn-implementation", default="sdpa")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None)
    ap.add_argument("--kernel", action="store_true")
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from anglecurate.base.batches import plan_batches, plan_packed
    from anglecurate.model.layers import wrap_model
    from anglecurate.scoring.angles.dispatch import kernel_backend
    from anglecurate.scoring.batching import collate, collate_packed
    from anglecurate.scoring.capture import angle_capture
    from anglecurate.scoring.config import ScoreConfig
    from anglecurate.scoring.manifest import versions
    from anglecurate.scoring.pipeline import plan, prepare_rows

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
    lengths = [s.n_tokens for s in items]
    if args.packing:
        batches = [collate_packed([items[i] for i in b]) for b in plan_packed(lengths, p.batch_tokens)]
    else:
        batches = [
            collate([items[i] for i in b], p.spec.pad_id) for b in plan_batches(lengths, p.batch_tokens)
        ]
    n_tokens = sum(s.n_tokens for s in items)

    if args.shape:  # random weights, exact shapes: no download
        from transformers import AutoConfig

        config = AutoConfig.for_model(**SHAPES[args.shape])
        torch.manual_seed(0)
        attn = args.attn_implementation
        with p.device:  # initialise on the device: seconds instead of a minute for 1.5B on a CPU
            lm = AutoModelForCausalLM.from_config(config, dtype=p.dtype, attn_implementation=attn)
        lm = lm.eval().to(p.device)
    else:
        lm = (
            AutoModelForCausalLM.from_pretrained(
                p.spec.source.directory,
                dtype=p.dtype,
                attn_implementation=args.attn_implementation,
                **p.spec.source.load_kwargs,
            )
            .eval()
            .to(p.device)
        )
    model = wrap_model(lm.base_model, lm.config.num_hidden_layers)
    # Which segment reduction `score` uses here (ANGLECURATE_KERNEL overrides).
    reduction = "triton" if kernel_backend(p.device) == "triton" else "ranges" if args.packing else "masks"

    def sync():
        if p.device.type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def bare() -> float:
        sync()
        t = time.perf_counter()
        for b in batches:
            inputs = {"input_ids": b.input_ids.to(p.device), "use_cache": False}
            if b.attention_mask is not None:
                inputs["attention_mask"] = b.attention_mask.to(p.device)
            if b.position_ids is not None:
                inputs["position_ids"] = b.position_ids.to(p.device)
            model.base(**inputs)
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

    # The reference runs with SDPA whatever the batched passes use: the authors' style, and
    # FlexAttention would recompile or rebuild its block mask for every prompt length.
    attn_used = getattr(lm.config, "_attn_implementation", args.attn_implementation)
    ref_attn = "sdpa" if hasattr(lm, "set_attn_implementation") else attn_used

    @torch.inference_mode()
    def reference(n: int) -> tuple[float, int]:
        store = {}
        hook = model.mlps[-1].register_forward_hook(
            lambda _m, inp, _o: store.__setitem__("x", inp[0].detach())
        )

        def one(s) -> None:
            lm(input_ids=torch.tensor([s.input_ids], device=p.device), use_cache=False)
            u = torch.nn.functional.normalize(store["x"][0].float(), dim=1)
            cos = (u @ u.T) * torch.tril(torch.ones(len(u), len(u), device=u.device), 1)
            _ = cos[s.n_prefix :].mean() + 8 * cos[s.n_prefix :][:, : s.n_prefix].mean()

        if ref_attn != attn_used:
            lm.set_attn_implementation(ref_attn)
        try:
            one(items[0])  # warm-up
            sync()
            t = time.perf_counter()
            for s in items[:n]:
                one(s)
            sync()
            return time.perf_counter() - t, sum(x.n_tokens for x in items[:n])
        finally:
            hook.remove()
            if ref_attn != attn_used:
                lm.set_attn_implementation(attn_used)

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
        "reference_attn_implementation": ref_attn,
        "speedup_over_reference": (n_tokens / min(t_score)) / (ref_tokens / t_ref),
        "packing": args.packing,
        "attn_implementation": args.attn_implementation,
        "reduction": reduction,
        "shape": args.shape,
        "model_flops_per_s": model_flops(lm.config, lengths) / min(t_bare),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if p.device.type == "cuda" else None,
        },
        "versions": {**versions(), "triton": _triton_version()},
    }
    if args.kernel:
        result["kernel"] = bench_kernel(p.device, lm.config.hidden_size)
    if p.device.type == "cuda":
        rate = matmul_rate(p.device)
        result["bf16_matmul_flops_per_s"] = rate
        result["mfu"] = result["model_flops_per_s"] / rate
        result["score_mfu"] = result["mfu"] * result["score_over_bare"]
    print(json.dumps(result, indent=1))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=1)


# Published shapes (config.json of each release), built with random weights.
_QWEN25 = dict(
    model_type="qwen2",
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
)
SHAPES = {
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        max_position_embeddings=8192,
    ),
    "qwen2.5-0.5b": dict(
        _QWEN25, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14
    ),
    "qwen2.5-1.5b": dict(
        _QWEN25, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12
    ),
}


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def model_flops(config, lengths: list[int]) -> float:
    """Forward FLOPs of the base model: 2 x non-embedding parameters per token, plus causal
    attention scores and values (2 x 2 x layers x d x L^2 / 2 per prompt)."""
    d, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = d // heads
    per_layer = d * d * 2 + 2 * d * kv * head_dim + 3 * d * ff  # q, o; k, v; gate, up, down
    dense = 2 * layers * per_layer * sum(lengths)
    attention = sum(2 * layers * d * n * n for n in lengths)
    return float(dense + attention)


def matmul_rate(device) -> float:
    """Best bf16 matmul FLOP/s of 8192^3 products: the device's practical peak."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * 8192**3 / best


def bench_kernel(device, d: int) -> dict:
    """The segment reduction alone on a packed bf16 [65536, d] input with 1024 segments.

    Errors are against a float64 reduction of the same bf16 values: ``rel_err`` is
    ||out - ref|| / ||ref|| over all sums. Bandwidth counts the bytes the segments cover
    (about half the tokens: the gaps between segments stand for suffixes and are not read);
    the copy counts bytes read plus written. On CUDA the times are medians of
    ``triton.testing.do_bench`` (device events), else means of 20 calls.
    """
    from anglecurate.scoring.angles.unit_sums import range_unit_sums

    gen = torch.Generator().manual_seed(0)
    cuts = torch.sort(torch.randperm(65535, generator=gen)[:2047] + 1).values
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([65536])])
    starts, ends = bounds[:-1][0::2], bounds[1:][0::2]  # every other range: gaps like suffixes
    x = torch.randn(65536, d, generator=gen).to(device=device, dtype=torch.bfloat16)
    ref, ref_sq = range_unit_sums(x.double(), starts, ends)
    covered = int((ends - starts).sum())

    def timed(fn) -> float:
        if device.type == "cuda":
            import triton.testing

            return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3
        fn()
        t = time.perf_counter()
        for _ in range(20):
            fn()
        return (time.perf_counter() - t) / 20

    def errors(sums, sq) -> dict:
        return {
            "rel_err": float((sums.double() - ref).norm() / ref.norm()),
            "max_abs_err": float((sums.double() - ref).abs().max()),
            "sq_max_abs_err": float((sq.double() - ref_sq).abs().max()),
        }

    out = {"tokens": 65536, "covered_tokens": covered, "d": d, "segments": starts.numel()}
    out["reference_s"] = timed(lambda: range_unit_sums(x, starts, ends))
    out["reference_err"] = errors(*range_unit_sums(x, starts, ends))
    out["copy_gb_per_s"] = 2 * x.numel() * 2 / timed(lambda: x.clone()) / 1e9  # read + write
    if device.type == "cuda":
        from anglecurate.scoring.angles.kernel import SegmentPlan, segment_unit_sums_triton

        plan = SegmentPlan.build(starts, ends, device)
        out.update(errors(*segment_unit_sums_triton(x, plan)))
        out["kernel_s"] = timed(lambda: segment_unit_sums_triton(x, plan))
        out["kernel_gb_per_s"] = covered * d * 2 / out["kernel_s"] / 1e9  # one read of the covered rows
        # Device time alone (CUDA graph replays, no Python launch cost between calls).
        import triton.testing

        out["kernel_graph_s"] = (
            triton.testing.do_bench_cudagraph(
                lambda: segment_unit_sums_triton(x, plan), rep=100, return_mode="median"
            )
            / 1e3
        )
        out["kernel_graph_gb_per_s"] = covered * d * 2 / out["kernel_graph_s"] / 1e9
        out["plan_build_s"] = timed(lambda: SegmentPlan.build(starts, ends, device))
    out["reference_gb_per_s"] = covered * d * 2 / out["reference_s"] / 1e9
    return out


if __name__ == "__main__":
    main()
