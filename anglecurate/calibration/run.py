"""`anglecurate calibrate`: measured pass rates on a sample, and a pass rate predicted for
every row from what scoring stored.

Order of work, all under the ranking folder's writer lock:

1. checks that need no model (one line each, nothing written): a finished ranking with
   stored per-layer values, the answer column, the sample, the settings of an earlier
   calibration of the folder (the same resume it; others are refused unless
   ``--overwrite``);
2. the cost bound, said before anything is generated;
3. rollouts (:mod:`anglecurate.calibration.rollouts`): k completions per sampled prompt in
   the rendering the rows were scored in, rewarded, stored per prompt (a rerun resumes);
4. the fit (:func:`anglecurate.stats.learnability.fit_learnability`) on the prefill features
   of every ranked row (:func:`anglecurate.scoring.features.read_prefill_features`);
5. ``p_pass`` and ``learnability`` added to every ranked row
   (:func:`anglecurate.scoring.rerank.attach_columns`: the order is kept), then
   ``OUT/calibrate.parquet`` (the sampled rows and their rollouts) and, last,
   ``OUT/calibrate.json``.

A caller above (the pilot) may pass its loaded ``model`` (and ``spec``), its own ``rows`` and
its ``trainer`` (whose colocated vLLM engine then generates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from anglecurate.base.errors import UserError
from anglecurate.base.progress import RowProgress
from anglecurate.calibration import cost as costs
from anglecurate.calibration.rollouts import Prompt, RolloutStore, roll_out
from anglecurate.calibration.sample import Sample, draw_sample, named_rows, order_position
from anglecurate.calibration.settings import CalibrateConfig, changed
from anglecurate.data.columns import answer_column, column_expr
from anglecurate.rewards.registry import resolve_reward
from anglecurate.scoring.store import OutputDir
from anglecurate.storage.atomic import atomic_write_json, atomic_write_parquet, read_json
from anglecurate.storage.lock import exclusive_writer

JSON, PARQUET = "calibrate.json", "calibrate.parquet"
COLUMNS = ("p_pass", "learnability")


@dataclass
class CalibrateResult:
    """What calibrate wrote and found: ``summary`` is calibrate.json, ``rollouts`` the rows
    of calibrate.parquet (one per sampled row), ``fit`` the predictor (every ranked row's
    ``p_pass`` in ``fit.p_pass``, aligned with ``row_index``)."""

    ranking: Path
    summary: dict
    rollouts: pl.DataFrame
    fit: object  # anglecurate.stats.learnability.LearnabilityFit
    row_index: np.ndarray  # [n] int64: the ranked rows fit.p_pass is for, in rank order

    @property
    def json_path(self) -> Path:
        return self.ranking / JSON

    @property
    def parquet_path(self) -> Path:
        return self.ranking / PARQUET

    @property
    def recommended(self) -> bool:
        return bool(self.summary["fit"]["recommended"])

    @property
    def pass_rates(self) -> pl.DataFrame:
        """row_index, uid, k, pass_rate, has_variance of every sampled row."""
        return self.rollouts.select("row_index", "uid", "k", "pass_rate", "has_variance")


def calibrate(
    cfg: CalibrateConfig,
    progress: RowProgress | None = None,
    log: Callable[[str], None] | None = None,
    *,
    model=None,
    spec=None,
    rows: Sequence[int] | None = None,
    trainer=None,
) -> CalibrateResult:
    """Roll out, fit and write (see the module docstring). ``log`` receives the lines a user
    reads before and while it runs (the cost, a sample larger than the ranking).
    ``model``: a loaded causal LM to generate with (else the model that scored, rebuilt from
    the manifest, on ``cfg.device`` in ``cfg.dtype``); ``spec``: the ranking's
    :class:`anglecurate.scoring.spec.RunSpec` when the caller has it; ``rows``: input rows
    (``row_index``) to roll out instead of the stratified sample."""
    cfg.validate()
    progress = progress or RowProgress(enabled=False)
    out = OutputDir(cfg.ranking)
    if not out.root.is_dir():
        raise out.no_ranking()
    with exclusive_writer(out.root, create=False):
        return _calibrate(cfg, out, progress, log or (lambda line: None), model, spec, rows, trainer)


def _calibrate(cfg, out: OutputDir, progress, log, model, spec, rows, trainer) -> CalibrateResult:
    from anglecurate.scoring.features import read_prefill_features

    manifest, parts = out.ranked_parts()
    run = manifest["run"]
    lazy = pl.scan_parquet(parts)
    columns = lazy.collect_schema().names()
    check_layers(out.root, columns, run)
    answer = answer_column(cfg.answer_field, columns, str(out.root))
    inputs = read_prefill_features(out.root, embeddings=cfg.embed)  # checked now: before any rollout
    ranked = lazy.select("row_index").collect()["row_index"].to_numpy()
    sample = _sample(cfg, ranked, rows, out.root)
    store = RolloutStore(out.root)
    settings = cfg.rollout_settings(rows) | {"scored": _scored(run)}
    plan = _plan(cfg, store, out.root, settings, sample, ranked, manifest)
    if sample.note():
        log(sample.note())
    field = run["dataset"]["field"]
    wanted = ["uid", "row_index", "score", "n_question", "n_tokens", field]
    frame = pl.DataFrame({"row_index": plan["rows"], "rank": plan["positions"]}, schema=_PLAN).join(
        lazy.filter(pl.col("row_index").is_in(plan["rows"]))
        .select(*wanted, column_expr(answer).cast(pl.String).alias("_answer"))
        .collect(),
        on="row_index",
        maintain_order="left",
    )
    done = store.done(plan["rows"])
    prompt_tokens = int(frame["n_tokens"].sum())
    planned = costs.Planned(
        frame.height, cfg.samples_per_prompt, cfg.max_new_tokens, prompt_tokens, len(done)
    )
    log(planned.line())

    started = time.perf_counter()
    this_run = {"prompts": 0, "generated_tokens": 0, "wall_seconds": 0.0, "load_seconds": 0.0}
    pending = frame.filter(~pl.col("row_index").is_in(list(done)))
    engine = None
    if pending.height:  # the model, its rendering and the engine: a failure here writes nothing
        from anglecurate.generation.engine import pick_engine
        from anglecurate.scoring.spec import RunSpec

        spec = spec or RunSpec.from_run(run, out.root, cfg.chat_template)
        prompts = _prompts(spec, pending, field)
        model = model if model is not None else spec.load_on(cfg.device, cfg.dtype, causal_lm=True).base
        engine = pick_engine(
            model, spec.tokenizer, engine=cfg.engine, trainer=trainer, max_batch_tokens=cfg.batch_tokens
        )
        this_run["load_seconds"] = round(time.perf_counter() - started, 2)
    store.start(settings | {"plan": plan})
    if engine is not None:
        progress.start("calibrating", total=frame.height, completed=len(done))
        rolled = roll_out(
            engine, prompts, resolve_reward(cfg.reward), store,
            k=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            seed=cfg.seed, max_batch_tokens=cfg.batch_tokens, advance=progress.advance,
        )  # fmt: skip
        param = next(model.parameters())
        this_run |= {"prompts": rolled.prompts, "generated_tokens": rolled.generated_tokens}
        this_run |= {"engine": engine.name, "device": str(param.device), "dtype": str(param.dtype)[6:]}
    records = store.done(plan["rows"])
    rollouts = _rollouts(frame, records)

    t0 = time.perf_counter()
    fit, extra = _fit(cfg, inputs, rollouts, lazy, manifest)
    this_run["fit_seconds"] = round(time.perf_counter() - t0, 2)
    this_run["wall_seconds"] = round(time.perf_counter() - started, 2)
    rollouts = rollouts.join(extra, on="row_index", how="left", maintain_order="left")
    summary = _summary(
        cfg, out.root, settings, sample, plan, planned, records, this_run, rollouts, fit, answer
    )
    from anglecurate.scoring.rerank import attach_columns

    values = pl.DataFrame({"row_index": inputs.row_index, **{c: getattr(fit, c) for c in COLUMNS}})
    attach_columns(out.root, values, {"by": "anglecurate calibrate", "details": JSON})
    atomic_write_parquet(rollouts, out.root / PARQUET)
    atomic_write_json(summary, out.root / JSON)  # last: its presence says the calibration finished
    return CalibrateResult(out.root, summary, rollouts, fit, inputs.row_index)


_PLAN = {"row_index": pl.Int64, "rank": pl.Int64}


def check_layers(root: Path, columns: list[str], run: dict) -> None:
    missing = [c for c in ("c_intra_layers", "c_inter_layers") if c not in columns]
    if missing or not run.get("layers"):
        raise UserError(
            f"{root} stores no per-layer values ({', '.join(missing) or 'run.layers'} missing), which the "
            "predictor fits on; score into a new folder with `anglecurate score --layers all` (the default "
            "stores every layer's c_intra and c_inter)"
        )


def _sample(cfg: CalibrateConfig, ranked: np.ndarray, rows, root: Path) -> Sample:
    if rows is not None:
        sample, missing = named_rows(ranked, rows, cfg.seed)
        if missing:
            raise UserError(
                f"{len(missing)} of the rows asked for are not ranked in {root} (skipped or dropped when "
                f"scored), the first row_index {missing[0]}; pass ranked rows only"
            )
    else:
        sample = draw_sample(ranked.size, cfg.sample, cfg.seed)
    if sample.size < 2 * cfg.folds:
        what = f"{sample.size} rows" if rows is not None or sample.everything else f"--sample {cfg.sample}"
        raise UserError(
            f"{what} to roll out in {root}: the predictor's {cfg.folds} held-out folds need at least "
            f"{2 * cfg.folds} (pass a larger --sample, or fewer --folds)"
        )
    return sample


def _scored(run: dict) -> dict:
    """The scoring run a calibration belongs to: rescored with another model, prompt,
    template or data, its stored prompts describe something else."""
    return {
        "model": run["model"]["config_hash"],
        "prompt": run["prompt"],
        "chat_template": run["tokenizer"]["chat_template_hash"],
        "data": run["dataset"].get("fingerprint"),
    }


def _plan(cfg, store: RolloutStore, root: Path, settings: dict, sample: Sample, ranked, manifest) -> dict:
    """The rows to roll out: the ones an earlier run of the same settings drew (the order
    may have changed since: calibrate's own columns re-rank it), else the sample drawn now.
    Another calibration's settings refuse, or with ``overwrite`` its stored prompts go."""
    previous = store.read_settings() or (read_json(root / JSON) or {}).get("rollout_settings")
    if previous is not None:
        stored = {k: v for k, v in previous.items() if k != "plan"}
        differ = changed(stored, settings) + (
            ["the scoring run"] if stored.get("scored") != settings["scored"] else []
        )
        if not differ and "plan" in previous:
            return previous["plan"]
        if differ and not cfg.overwrite:
            raise UserError(
                f"{root} holds a calibration with other settings ({', '.join(differ)}); rerun with the "
                "same settings to resume or reuse it, or pass --overwrite to replace it"
            )
        store.clear()
    order = manifest["ranking"]
    return {
        "rows": [int(ranked[p]) for p in sample.positions],
        "positions": [int(p) for p in sample.positions],
        "order": {"by": order.get("by", "score"), "ascending": order.get("ascending", False)},
    }


def _prompts(spec, rows: pl.DataFrame, field: str) -> list[Prompt]:
    """Each row's conversation as it was scored, rendered with the generation prompt."""
    prompts, texts = [], []
    for row in rows.iter_rows(named=True):
        messages, rendered = spec.render(row[field])
        prompts.append((row, messages))
        texts.append(rendered.text)
    lengths = spec.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [
        Prompt(int(row["row_index"]), row["uid"], messages, text, len(ids), row["_answer"] or "")
        for (row, messages), text, ids in zip(prompts, texts, lengths, strict=True)
    ]


ROLLOUT_FIELDS = {
    "k": pl.Int32,
    "pass_rate": pl.Float64,
    "has_variance": pl.Boolean,
    "rewards": pl.List(pl.Float64),
    "raw_rewards": pl.List(pl.Float64),
    "completions": pl.List(pl.String),
    "completion_tokens": pl.List(pl.Int32),
    "prompt_tokens": pl.Int32,
    "seconds": pl.Float64,
}


def _rollouts(frame: pl.DataFrame, records: dict[int, dict]) -> pl.DataFrame:
    """calibrate.parquet's rows (docs/formats.md): the sampled rows in sample order, each
    with its stored rollouts."""
    order = frame["row_index"].to_list()
    stored = pl.DataFrame(
        {"row_index": order, **{name: [records[r][name] for r in order] for name in ROLLOUT_FIELDS}},
        schema={"row_index": pl.Int64, **ROLLOUT_FIELDS},
    )
    head = frame.select("uid", "row_index", "rank", "score", "n_question", pl.col("_answer").alias("answer"))
    return head.join(stored, on="row_index", maintain_order="left")


def _fit(cfg: CalibrateConfig, inputs, rollouts: pl.DataFrame, lazy: pl.LazyFrame, manifest: dict):
    """The predictor fitted on the sampled rows; and per sampled row its predictions and
    where it stands in the angle order and in the calibrated one (by its held-out
    prediction, which never saw it)."""
    from anglecurate.stats.learnability import fit_learnability

    where = {int(r): i for i, r in enumerate(inputs.row_index.tolist())}
    at = np.array([where[int(r)] for r in rollouts["row_index"]], dtype=np.int64)
    n = inputs.row_index.size
    rate, k = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    rate[at] = rollouts["pass_rate"].to_numpy()
    k[at] = rollouts["k"].to_numpy()
    fit = fit_learnability(
        inputs.features, rate, k, inputs.baselines, folds=cfg.folds, seed=cfg.seed, n_resamples=cfg.bootstrap
    )
    angle = _angle_key(inputs, lazy, manifest)
    extra = pl.DataFrame(
        {
            "row_index": rollouts["row_index"],
            "p_pass": fit.p_pass[at],
            "p_pass_held_out": fit.held_out[at],
            "learnability": fit.learnability[at],
            "angle_position": order_position(angle, angle[at]),
            "calibrated_position": order_position(fit.p_pass, fit.held_out[at]),
        }
    )
    return fit, extra


def _angle_key(inputs, lazy: pl.LazyFrame, manifest: dict) -> np.ndarray:
    """The angle order's key for every row of ``inputs``: the score, or its length-controlled
    residual when the ranking's choice controls for length."""
    if not manifest["ranking"].get("length_control"):
        return inputs.baselines["score"]
    keys = lazy.select("row_index", "score_length_controlled").collect()
    by_row = dict(zip(keys["row_index"].to_list(), keys["score_length_controlled"].to_list(), strict=True))
    return np.array([np.nan if by_row.get(r) is None else by_row[r] for r in inputs.row_index.tolist()])


def _summary(cfg, root, settings, sample, plan, planned, records, this_run, rollouts, fit, answer) -> dict:
    """calibrate.json (docs/formats.md)."""
    rate = rollouts["pass_rate"].to_numpy()
    variance = rollouts["has_variance"].to_numpy()
    return {
        "ranking": str(root),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {k: v for k, v in cfg.to_dict().items() if k not in ("ranking", "overwrite")},
        "rollout_settings": settings,
        "answer_field": answer,
        "sample": sample.to_dict() | {"n": rollouts.height, "over": plan["order"]},
        "measured": {
            "rows": rollouts.height,
            "mean_pass_rate": float(rate.mean()),
            "zero_variance_groups": int((~variance).sum()),
            "zero_variance_share": float((~variance).mean()),
            "all_failed": int((rate == 0).sum()),
            "all_passed": int((rate == 1).sum()),
        },
        "cost": {"planned": planned.to_dict(), "recorded": costs.recorded(list(records.values()), this_run)},
        "fit": fit.to_dict(),
        "columns": list(COLUMNS),
        "files": {"rollouts": PARQUET},
        "next": f"anglecurate rank {root} --by p_pass",
    }
