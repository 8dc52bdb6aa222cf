"""`anglecurate validate`: does the ranking signal hold for this model and these data?

    ranking  -> a seeded sample, one row per stratum of the ranking, split into two halves
    model    -> real backward passes of the model that scored them (anglecurate.evidence.gradients)
    evidence -> confounds, correlations, family-wise p, choose/hold-out (anglecurate.evidence.analysis)
    output   -> OUT/validate.json (every number and the recommendation), OUT/validate.parquet

Examples finished so far are appended to a cache in ``OUT/.anglecurate-validate/`` keyed by
the options that change them, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import torch

from anglecurate.base.errors import UserError
from anglecurate.base.progress import RowProgress
from anglecurate.data.columns import answer_column, column_expr, pick_column
from anglecurate.evidence import analysis
from anglecurate.rewards.registry import resolve_reward
from anglecurate.scoring.ranking import RankChoice, floats
from anglecurate.scoring.store import OutputDir
from anglecurate.stats.sampling import split_halves, stratified_sample
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet
from anglecurate.storage.lock import exclusive_writer

DIFFICULTY_FIELDS = ("difficulty", "level")
TARGETS = {
    "grad_norm": "whole-model gradient norm of the reference answer's LM loss",
    "loss": "LM loss (mean token NLL) of the reference answer",
    "grad_mlp_in": "gradient norm of the ranking layer's MLP input projections (answer loss)",
    "rl_grad_norm": "gradient norm of the GRPO loss over k sampled completions (rewarded by --reward)",
}


@dataclass
class ValidateConfig:
    ranking: str
    sample: int = 240
    seed: int = 0
    answer_field: str | None = None  # None: the first of ANSWER_FIELDS present
    difficulty_field: str | None = None  # None: the first of DIFFICULTY_FIELDS present
    target: str = "grad_norm"
    rl_samples: int = 0  # k completions per prompt; 0: no RL-style target
    max_new_tokens: int = 512
    reward: str = "boxed"  # boxed, number or module:function (anglecurate.rewards.registry)
    device: str = "auto"
    dtype: str = "auto"
    chat_template: str | None = None
    bootstrap: int = 1000
    permutations: int = 1000

    def validate(self) -> None:
        if self.sample < 8:
            raise UserError("--sample must be at least 8 (two halves of 4 or more)")
        if self.target not in TARGETS:
            raise UserError(f"--target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if self.target == "rl_grad_norm" and self.rl_samples < 2:
            raise UserError("--target rl_grad_norm needs --rl-samples 2 or more (a group to compare)")
        if self.rl_samples == 1 or self.rl_samples < 0:
            raise UserError("--rl-samples must be 0 (off) or at least 2")
        for name in ("bootstrap", "permutations", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.rl_samples:  # an unknown reward fails before the model loads
            resolve_reward(self.reward)


def run_validation(cfg: ValidateConfig, progress: RowProgress | None = None) -> dict:
    """Sample, measure, analyse, write; returns the validate.json content."""
    cfg.validate()
    progress = progress or RowProgress(enabled=False)
    out = OutputDir(cfg.ranking)
    with exclusive_writer(out.root, create=False):  # validate's outputs and cache live in the ranking folder
        return _run_validation(cfg, out, progress)


def _run_validation(cfg: ValidateConfig, out: OutputDir, progress: RowProgress) -> dict:
    manifest, parts = out.ranked_parts()
    run = manifest["run"]
    lazy = pl.scan_parquet(parts)
    columns = lazy.collect_schema().names()
    answer_field = answer_column(cfg.answer_field, columns, str(out.root))
    difficulty_field = pick_column(cfg.difficulty_field, DIFFICULTY_FIELDS, columns, "--difficulty-field")
    n_rows = lazy.select(pl.len()).collect().item()
    positions = stratified_sample(n_rows, cfg.sample, cfg.seed)
    if cfg.sample > n_rows:
        print(
            f"warning: --sample {cfg.sample} is more than the {n_rows} ranked rows of {out.root}; "
            f"measuring all {n_rows}",
            file=sys.stderr,
        )
    rows = lazy.filter(pl.col("rank").is_in(positions.tolist())).collect().sort("rank")
    if rows.height < 8:
        raise UserError(f"{out.root} has {rows.height} ranked rows; validate needs at least 8")
    rows = rows.with_columns(column_expr(answer_field).cast(pl.String).alias("_answer"))
    choose = split_halves(rows["rank"].to_numpy(), cfg.seed)

    measured = _measure(cfg, out, run, rows, progress)
    answer_target = _answer_target(measured)
    frame = _per_example(rows, measured, choose, difficulty_field, run)
    report = _analyse(cfg, frame, rows, run, manifest)
    report |= {
        "answer_target": answer_target,
        "ranking": str(out.root),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": asdict(cfg),
        "answer_field": answer_field,
        "difficulty_field": difficulty_field,
    }
    atomic_write_parquet(frame, out.root / "validate.parquet")
    atomic_write_json(report, out.root / "validate.json")
    return report


def _answer_target(measured: list[dict]) -> str:
    """How the reference answers were rendered; a fallback to answer + eos is warned once."""
    from anglecurate.evidence.gradients import TEMPLATE_TARGET

    used = [m.get("answer_target", TEMPLATE_TARGET) for m in measured]  # older caches: the template
    fallbacks = sorted(set(used) - {TEMPLATE_TARGET})
    if not fallbacks:
        return TEMPLATE_TARGET
    n = sum(u != TEMPLATE_TARGET for u in used)
    print(
        f"warning: validate's answer target is {'; '.join(fallbacks)} for {n} of {len(measured)} examples",
        file=sys.stderr,
    )
    return "; ".join(fallbacks)


def _measure(cfg: ValidateConfig, out: OutputDir, run: dict, rows: pl.DataFrame, progress) -> list[dict]:
    """One backward pass per sampled row (two with the RL target), resumable."""
    from anglecurate.evidence import gradients
    from anglecurate.scoring.segments import SkipReason, truncate
    from anglecurate.scoring.spec import RunSpec

    spec = RunSpec.from_run(run, out.root, cfg.chat_template)
    segmenter = spec.segmenter()
    model = spec.load_on(cfg.device, cfg.dtype, causal_lm=True)
    lm, device = model.base, model.device
    probe = torch.tensor([[0, 1]], device=device)
    projections = gradients.mlp_input_projections(model.mlps, lambda: lm(input_ids=probe, use_cache=False))
    reward = resolve_reward(cfg.reward) if cfg.rl_samples else None

    cache = _Cache(out.root, cfg, run)
    done = cache.load()
    progress.start("validating", total=rows.height, completed=sum(u in done for u in rows["uid"].to_list()))
    results = []
    field = run["dataset"]["field"]
    for row in rows.iter_rows(named=True):
        key = json.dumps(row["uid"], default=str)
        if key in done:
            results.append(done[key])
            continue
        t0 = time.perf_counter()
        messages, rendered = spec.render(row[field])
        seg = truncate(segmenter([rendered])[0], spec.max_length, spec.on_long)
        if isinstance(seg, SkipReason):  # cannot happen for a ranked row unless options changed
            raise UserError(f"row {row['uid']} no longer fits --max-length; rescore {out.root}")
        example = gradients.answer_example(
            spec.tokenizer, spec.renderer.chat_template, messages, rendered.text, seg.input_ids,
            row["_answer"] or "",
        )  # fmt: skip
        result = gradients.answer_target(lm, example, projections) | {"answer_target": example.target}
        if reward is not None:
            seed = cfg.seed * 1_000_003 + int(row["rank"])
            result |= gradients.rl_target(
                lm, spec.tokenizer, seg.input_ids, row["_answer"] or "", projections, reward,
                cfg.rl_samples, cfg.max_new_tokens, seed, prompt=messages,
            )  # fmt: skip
        result["seconds"] = round(time.perf_counter() - t0, 3)
        cache.append(key, result)
        results.append(result)
        progress.advance(1, int(example.input_ids.numel()))
    return results


class _Cache:
    """Finished examples as JSON lines, keyed by everything that changes them."""

    def __init__(self, root: Path, cfg: ValidateConfig, run: dict):
        keyed = {k: v for k, v in asdict(cfg).items() if k not in ("ranking", "bootstrap", "permutations")}
        keyed |= {"model": run["model"], "prompt": run["prompt"]}
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.path = root / ".anglecurate-validate" / f"{digest}.jsonl"

    def load(self) -> dict[str, dict]:
        done = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: measured again
                    continue
                done[entry["uid"]] = entry["result"]
        return done

    def append(self, key: str, result: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"uid": key, "result": result}) + "\n")


def _per_example(
    rows: pl.DataFrame, measured: list[dict], choose: np.ndarray, difficulty: str | None, run
) -> pl.DataFrame:
    """validate.parquet: one row per sampled example (see docs/formats.md)."""
    layers = run["layers"]
    frame = rows.select("uid", "rank", "score", "n_question", "n_tokens").with_columns(
        pl.Series("half", np.where(choose, "choose", "hold_out")),
        pl.Series("difficulty", _difficulty(rows, difficulty), pl.Float64),
        pl.Series("loss", [m["loss"] for m in measured], pl.Float64),
        pl.Series("grad_norm", [m["grad_norm"] for m in measured], pl.Float64),
        pl.Series("grad_mlp_in_layers", [[m["grad_mlp_in_layers"][i] for i in layers] for m in measured]),
        pl.Series("seconds", [m["seconds"] for m in measured], pl.Float64),
    )
    if "rl_grad_norm" in measured[0]:
        frame = frame.with_columns(
            pl.Series("pass_rate", [m["pass_rate"] for m in measured], pl.Float64),
            pl.Series("zero_variance", [m["zero_variance"] for m in measured], pl.Boolean),
            pl.Series("rl_grad_norm", [m["rl_grad_norm"] for m in measured], pl.Float64),
        )
    return frame


def _difficulty(rows: pl.DataFrame, field: str | None) -> list[float | None]:
    """Numbers from a difficulty column: floats as they are, "Level 3" as 3, else null."""
    if field is None:
        return [None] * rows.height
    values = []
    for v in rows.select(column_expr(field))[:, 0].to_list():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values.append(float(v))
        else:
            match = re.search(r"-?\d+(\.\d+)?", str(v)) if v is not None else None
            values.append(float(match.group()) if match else None)
    return values


def _analyse(cfg: ValidateConfig, frame: pl.DataFrame, rows: pl.DataFrame, run: dict, manifest: dict) -> dict:
    choice = RankChoice.from_dict(manifest["ranking"])
    layers = run["layers"]
    intra = np.array(rows["c_intra_layers"].to_list(), dtype=np.float64)
    inter = np.array(rows["c_inter_layers"].to_list(), dtype=np.float64)
    w_intra, w_inter = (choice.w_intra, choice.w_inter) if choice.metric == "angles" else (1.0, 1.0)
    features = {
        "score": floats(rows["score"]),
        "score_length_controlled": floats(rows["score_length_controlled"]),
    }
    if rows["gainrl_reference"].null_count() < rows.height:
        features["gainrl_reference"] = floats(rows["gainrl_reference"])
    features |= analysis.layer_features(intra, inter, layers, w_intra, w_inter)
    grad_mlp = np.array(frame["grad_mlp_in_layers"].to_list(), dtype=np.float64)
    targets = {
        "grad_norm": frame["grad_norm"].to_numpy(),
        "loss": frame["loss"].to_numpy(),
        "grad_mlp_in": grad_mlp[:, layers.index(choice.layer)],
    }
    if "rl_grad_norm" in frame.columns:
        targets["rl_grad_norm"] = frame["rl_grad_norm"].to_numpy()
    target = targets[cfg.target]  # rl_grad_norm without --rl-samples is refused in validate()
    length = frame["n_question"].to_numpy().astype(np.float64)
    difficulty = floats(frame["difficulty"])
    covariates = {"n_question": length}
    if np.isfinite(difficulty).sum() >= 8:
        covariates["difficulty"] = difficulty
    covariates["loss"] = targets["loss"]
    controls = {k: v for k, v in covariates.items() if not (k == "loss" and cfg.target == "loss")}
    seed, n_boot = cfg.seed, cfg.bootstrap
    choose = (frame["half"] == "choose").to_numpy()
    split = analysis.split_check(features, target, choose, seed, n_boot)
    recommendation, why = analysis.recommend(split, w_intra, w_inter, cfg.target)
    target_confounds = [
        {"target": name, "covariate": cov, **analysis.rank_correlation(values, z)}
        for name, values in targets.items()
        for cov, z in covariates.items()
        if name != cov
    ]
    # The paper's layer-wise link: each layer's angles against the gradient of the very
    # weights that read that layer's MLP input.
    layerwise = [
        {
            "layer": layer,
            "feature": f"combined@{layer}",
            **analysis.rank_correlation(features[f"combined@{layer}"], grad_mlp[:, k]),
        }
        for k, layer in enumerate(layers)
    ]
    found = analysis.correlations(features, target, cfg.target, controls, seed, n_boot, cfg.permutations)
    report = {
        "primary_target": cfg.target,
        "targets": {k: TARGETS[k] for k in targets},
        "sample": {
            "n": frame.height,
            "asked": cfg.sample,
            "seed": cfg.seed,
            "of": int(manifest["counts"]["scored"]),
        },
        "target_confounds": target_confounds,
        "confounds": analysis.confounds(features, covariates, seed, n_boot),
        "correlations": found,
        "layerwise_mlp_in": layerwise,
        "split": split,
        "recommendation": recommendation,
        "why": why,
        "current_ranking": choice.to_dict(),
    }
    if "rl_grad_norm" in frame.columns:
        pass_rate = frame["pass_rate"].to_numpy()
        report["rl"] = {
            "samples": cfg.rl_samples,
            "mean_pass_rate": float(pass_rate.mean()),
            "pass_rate_histogram": {
                "0": int((pass_rate == 0).sum()),
                "(0, 0.5)": int(((pass_rate > 0) & (pass_rate < 0.5)).sum()),
                "[0.5, 1)": int(((pass_rate >= 0.5) & (pass_rate < 1)).sum()),
                "1": int((pass_rate == 1).sum()),
            },
            "zero_variance_groups": int(frame["zero_variance"].sum()),
        }
    return report
