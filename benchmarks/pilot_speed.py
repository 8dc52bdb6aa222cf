"""Benchmark: seconds per GRPO step of the pilot's trainers, and what GAIN-RL adds (not a
timed test).

Three trainers train the same SmolLM2-135M-Instruct (``builtin:smollm2``, fp32, the same
initial weights each run) on the same 1,200 ``builtin:arithmetic`` rows with the published
pilot's settings (4 prompts x 8 completions of at most 16 tokens, learning rate 2e-5, the
``number`` reward, TRL's ``GRPOConfig`` from :func:`anglecurate.piloting.train.grpo_args`):

- ``bare``     TRL's own ``GRPOTrainer``, unchanged: what the pilot's uniform arm is;
- ``sampler``  ``GainRLGRPOTrainer`` with the angle meter off: GAIN-RL's window sampler
               (over the shortest-first order; any order costs the same) and nothing else;
- ``gainrl``   ``GainRLGRPOTrainer`` as the pilot's ordered arms run it: the sampler and the
               training-time angle meter (hooks in the loss forward).

``sampler`` and ``gainrl`` draw the same prompts and, from the same seed and weights, the
same completions within the first GAIN-RL epoch (the meter changes no gradient), so their
difference is the meter's cost alone; each run is kept inside that epoch (``--steps`` <=
5 with the published epoch of 20 prompts) and the benchmark checks the two generated the
same tokens. ``bare`` draws other prompts (TRL's shuffle), so its difference from
``sampler`` mixes the sampler's cost with other completions' lengths: the generated tokens
are printed beside it. Runs are interleaved (round r runs every trainer once) so a load
that comes and goes on a shared machine falls on all three alike.

Usage (from the repository root):

    nice -n 5 .venv/bin/python benchmarks/pilot_speed.py --steps 4 --rounds 2

Prints one JSON line per run and a summary line; appends them to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import types
from pathlib import Path

TRAINERS = ("sampler", "gainrl", "bare")


def _setup(rows: int):
    import polars as pl

    from anglecurate.piloting.arms import length_order
    from anglecurate.piloting.plan import GRPOOptions, PilotConfig
    from anglecurate.piloting.train import load_policy
    from anglecurate.rewards.registry import resolve_reward
    from anglecurate.scoring.spec import RunSpec
    from anglecurate.sources.arithmetic import arithmetic_file

    frame = pl.read_ndjson(arithmetic_file()).head(rows).with_columns(pl.col("uid").cast(pl.String))
    grpo = GRPOOptions(num_generations=8, prompts_per_step=4, max_completion_length=16, learning_rate=2e-5)
    cfg = PilotConfig(
        model="builtin:smollm2", data="builtin:arithmetic", field="problem", answer_field="answer",
        out="unused", steps=5, eval_every=5, grpo=grpo,
    )  # fmt: skip
    spec = RunSpec.from_options(cfg.model, prompt_config="none", template_required=False)
    policy = load_policy(types.SimpleNamespace(spec=spec, cfg=cfg))
    initial = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    train_rows = [
        {"prompt": [{"role": "user", "content": p}], "answer": str(a), "uid": u}
        for p, a, u in zip(frame["problem"], frame["answer"], frame["uid"], strict=True)
    ]
    order = length_order(frame, "problem", spec.tokenizer)
    return cfg, spec, policy, initial, train_rows, order, resolve_reward(cfg.reward)


def run_once(kind: str, steps: int, setup, work: Path) -> dict:
    """Train ``steps`` optimizer steps with trainer ``kind`` from the initial weights."""
    from dataclasses import replace

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from anglecurate.piloting.train import grpo_args
    from anglecurate.scheduling.curriculum import Curriculum
    from anglecurate.scheduling.sampler import SamplerParams
    from anglecurate.scheduling.trl import GainRLGRPOTrainer

    cfg, spec, policy, initial, train_rows, order, reward = setup
    policy.load_state_dict(initial)
    run_cfg = replace(cfg, steps=steps)
    times, tokens = [], [0]

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    def counted(prompts, completions, completion_ids=None, **kw):
        tokens[0] += sum(len(ids) for ids in completion_ids or [])
        return reward(prompts=prompts, completions=completions, **kw)

    counted.__name__ = "number"
    kwargs = dict(
        model=policy,
        args=grpo_args(run_cfg, work / kind, seed=0, micro_batch=32),
        train_dataset=Dataset.from_list(train_rows),
        reward_funcs=[counted],
        processing_class=spec.tokenizer,
        callbacks=[Clock()],
    )
    kwargs["args"].save_strategy = "no"
    if kind == "bare":
        trainer = GRPOTrainer(**kwargs)
    else:
        uids = [row["uid"] for row in train_rows]
        curriculum = Curriculum.from_order(
            order, uids, cfg.epoch_prompts, SamplerParams.for_size(len(order)), seed=0, rank_layer=-1
        )
        trainer = GainRLGRPOTrainer(**kwargs, curriculum=curriculum, measure_angle=kind == "gainrl")
    trainer.train()
    after_first = times[1:] or times
    return {
        "trainer": kind,
        "steps": len(times),
        "seconds_per_step": round(statistics.mean(after_first), 3),
        "step_seconds": [round(t, 3) for t in times],
        "generated_tokens": tokens[0],
    }


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="steps per run (<= 5: one GAIN-RL epoch)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1200)
    ap.add_argument("--results", type=Path, default=Path("pilot-speed.jsonl"))
    args = ap.parse_args()
    if not 2 <= args.steps <= 5:
        raise SystemExit("--steps must be 2 to 5: the first step is warm-up, and one epoch is 5 steps")
    setup = _setup(args.rows)
    runs = []
    with tempfile.TemporaryDirectory() as work, args.results.open("a") as out:
        for r in range(args.rounds):
            for kind in TRAINERS:
                result = run_once(kind, args.steps, setup, Path(work)) | {"round": r}
                runs.append(result)
                print(json.dumps(result), flush=True)
                out.write(json.dumps(result) + "\n")
        per = {
            k: statistics.median(x["seconds_per_step"] for x in runs if x["trainer"] == k) for k in TRAINERS
        }
        same = {
            (a["round"], a["generated_tokens"] == b["generated_tokens"])
            for a in runs if a["trainer"] == "sampler" for b in runs
            if b["trainer"] == "gainrl" and b["round"] == a["round"]
        }  # fmt: skip
        summary = {
            "summary": True,
            "median_seconds_per_step": per,
            "meter_overhead": round(per["gainrl"] / per["sampler"] - 1, 4),
            "gainrl_vs_bare": round(per["gainrl"] / per["bare"] - 1, 4),
            "sampler_and_gainrl_generated_the_same_tokens": all(s for _, s in same),
            "settings": "4 prompts x 8 completions x 16 tokens, lr 2e-5, fp32, SmolLM2-135M-Instruct",
            "machine": {
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        }
        print(json.dumps(summary), flush=True)
        out.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
