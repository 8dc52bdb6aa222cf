"""`anglecurate score`, stage by stage.

    dataset  -> rows in chunks             (anglecurate.data.dataset)
    prompt   -> chat text + question span  (anglecurate.scoring.prompt)
    segments -> token ids + segment spans  (anglecurate.scoring.segments)
    batching -> padded length buckets      (anglecurate.scoring.batching)
    capture  -> per-layer c_intra, c_inter (anglecurate.scoring.capture, anglecurate.scoring.angles)
                (and with --embed, one layer's pooled question tokens)
    store    -> chunk files in OUT, resume     (anglecurate.scoring.store)
    merge    -> global ranking, manifest       (anglecurate.scoring.merge)
                (and embeddings.safetensors, anglecurate.scoring.embeddings)

Options, the data file and its columns, the model config, the tokenizer and the output
folder are all checked before the weights load, and nothing in ``OUT`` is touched before
then. A malformed row is found when its chunk is read; if nothing was scored yet, the run
leaves no trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import torch

from anglecurate.base.batches import plan_batches, plan_packed
from anglecurate.base.errors import UserError
from anglecurate.base.progress import RowProgress
from anglecurate.data.dataset import Dataset, open_dataset, prompt_kind
from anglecurate.data.shard import Shard
from anglecurate.model.load import DTYPE_NAMES, resolve_device, resolve_dtype
from anglecurate.model.load import num_layers as model_num_layers
from anglecurate.scoring.batching import collate, collate_packed
from anglecurate.scoring.capture import AngleCapture, angle_capture
from anglecurate.scoring.config import ScoreConfig, batch_budget, parse_layers
from anglecurate.scoring.gainrl_reference import ReferenceSpec
from anglecurate.scoring.manifest import changed_keys, device_info
from anglecurate.scoring.merge import complete
from anglecurate.scoring.prompt import InvalidRow
from anglecurate.scoring.ranking import RankChoice, resolve_layer
from anglecurate.scoring.rerank import rerank
from anglecurate.scoring.result import ScoreResult, run_timing
from anglecurate.scoring.segments import Segmented, Segmenter, SkipReason, truncate
from anglecurate.scoring.spec import RunSpec, preflight
from anglecurate.scoring.store import EMBED, RESERVED_COLUMNS, ROW, SCORED, STATUS, OutputDir
from anglecurate.storage.lock import exclusive_writer


@dataclass
class _Plan:
    """Resolved, validated inputs of a run (before any model weights are loaded)."""

    dataset: Dataset
    kind: str
    spec: RunSpec
    segmenter: Segmenter
    layers: list[int]
    choice: RankChoice
    reference: ReferenceSpec | None
    run: dict
    device: torch.device
    dtype: torch.dtype
    batch_tokens: int
    shard: Shard
    embed: int | None = None  # the layer whose pooled question tokens are stored (--embed)


def plan(cfg: ScoreConfig) -> _Plan:
    cfg.validate()
    source = preflight(cfg.model, cfg.revision, cfg.chat_template)  # before anything slow
    dataset = open_dataset(cfg.data, cfg.split, cfg.data_config)
    kind = prompt_kind(dataset, cfg.field)
    label = dataset.source.label if dataset.source else str(dataset.path)  # --data as given
    if cfg.id_field is not None and cfg.id_field not in dataset.schema:
        raise UserError(
            f"{label} has no column {cfg.id_field!r}; pass --id-field with one of {dataset.columns}"
        )
    clash = sorted(RESERVED_COLUMNS.intersection(dataset.columns) - {cfg.id_field})
    if clash:
        raise UserError(
            f"{label} already has columns {clash} that anglecurate writes; rename or drop them"
            + (" (or pass --id-field uid to use 'uid' as the id)" if "uid" in clash else "")
        )
    spec = RunSpec.from_options(
        cfg.model,
        cfg.revision,
        cfg.chat_template,
        cfg.prompt_config,
        cfg.trust_remote_code,
        cfg.attn_implementation,
        cfg.max_length,
        cfg.on_long,
        source=source,
    )
    num_layers = model_num_layers(spec.config)
    layers = parse_layers(cfg.layers, num_layers)  # `all` and `last` are settled once it loads
    choice, reference, by_layers = _layer_choice(cfg, layers, num_layers)
    embed = _embed_layer(cfg, layers, num_layers)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, spec.config, device)
    run = {
        "model": {
            **spec.model_record(),
            "model_type": spec.config.model_type,
            "num_layers": num_layers,
            "dtype": DTYPE_NAMES.get(dtype, str(dtype)),
        },
        "tokenizer": spec.tokenizer_record(),
        "prompt": spec.prompt.to_dict(),
        "dataset": {
            "path": str(dataset.path.resolve()),
            "format": dataset.format,
            "fingerprint": dataset.fingerprint,
            "rows": dataset.num_rows,
            "field": cfg.field,
            "kind": kind,
            "id_field": cfg.id_field,
            **_data_origin(dataset),
        },
        **by_layers,
        "max_length": cfg.max_length,
        "on_long": cfg.on_long,
        "skip_invalid": cfg.skip_invalid,
        "chunk_rows": cfg.chunk_rows,
        "shard_rows": cfg.shard_rows,
        "shards": cfg.shard.count,
    }
    if embed is not None:  # only then: a run without --embed records what it always did
        run["embed"] = {"layer": embed}
    return _Plan(
        dataset=dataset,
        kind=kind,
        spec=spec,
        segmenter=spec.segmenter(),
        layers=layers,
        choice=choice,
        reference=reference,
        run=run,
        device=device,
        dtype=dtype,
        batch_tokens=batch_budget(cfg.max_batch_tokens, device.type),
        shard=cfg.shard,
        embed=embed,
    )


def _embed_layer(cfg: ScoreConfig, layers: list[int], num_layers: int) -> int | None:
    """The --embed layer, checked against the scored layers (its hook is theirs: pooling a
    layer above the deepest scored one would run layers the angles stop before)."""
    if cfg.embed is None:
        return None
    layer = resolve_layer(cfg.embed, num_layers, "--embed")
    if layer not in layers:
        raise UserError(
            f"--embed {cfg.embed}: layer {layer} is not scored (--layers {cfg.layers}); "
            "add it to --layers or pick a scored layer"
        )
    return layer


def _layer_choice(cfg: ScoreConfig, layers: list[int], num_layers: int):
    """What follows from the scored layers: the ranking choice, the authors' spec (when
    their metric ranks), and the run's ``layers``, ``reference`` and ``ranking`` entries."""
    choice = cfg.choice.resolved(layers, num_layers)
    reference = None
    if choice.metric == "gainrl-reference":
        reference = ReferenceSpec(choice.layer, cfg.ref_prefix, cfg.ref_suffix)
    run = {
        "layers": layers,
        # The authors' value is computed while scoring (it needs every token), so its layer
        # and P, S are scoring options; the ranking choice is not (see changed_keys).
        "reference": None
        if reference is None
        else {"layer": reference.layer, "prefix": cfg.ref_prefix, "suffix": cfg.ref_suffix},
        "ranking": choice.to_dict(),
    }
    return choice, reference, run


def _data_origin(dataset: Dataset) -> dict:
    """How a dataset other than one local file was found (a single file records nothing
    more, so runs started before shard and hub inputs existed still resume)."""
    origin = dataset.source.origin if dataset.source is not None else {}
    if origin.get("kind") in (None, "file", "builtin"):
        return {}
    return {"origin": origin}


def score(cfg: ScoreConfig, progress: RowProgress | None = None) -> ScoreResult:
    """Score ``cfg.data`` with ``cfg.model`` into ``cfg.out``; resumes an unfinished run.

    With ``cfg.shard`` = i/N only shard i's rows are scored; the shard that completes the
    set builds the global ranking (see :func:`merge`)."""
    progress = progress or RowProgress(enabled=False)
    out = OutputDir(cfg.out)
    with exclusive_writer(out.root, lock=cfg.shard.whole):  # shards share OUT by design
        return _score(cfg, out, progress)


def _score(cfg: ScoreConfig, out: OutputDir, progress: RowProgress) -> ScoreResult:
    p, finished = open_run(cfg, out)
    if finished is not None:
        return finished
    shard = cfg.shard
    model = p.spec.load_model(p.dtype, p.device)
    p = settle_layers(cfg, p, model.ffn_layers, type(model.base).__name__)
    check_previous(cfg, p, out)
    done, done_rows = start_run(cfg, p, out)
    t0 = time.perf_counter()
    tokens = 0
    rows_scored_now = 0
    try:
        with angle_capture(model, p.layers, p.reference, embed=p.embed) as capture:
            label = "scoring" if shard.whole else f"shard {shard}"
            progress.start(label, total=p.dataset.num_rows, completed=done_rows)
            for index, frame in p.dataset.iter_chunks(cfg.chunk_rows, skip=done):
                scored, n_tokens, n_mine = score_chunk(index, frame, cfg, p, capture, progress)
                out.write_chunk(index, scored, shard.tag)
                tokens += n_tokens
                rows_scored_now += n_mine
    except UserError:
        # A bad row found before anything was scored leaves no trace, so the fixed data can
        # be scored into the same folder; finished chunks are kept for a resume otherwise.
        # (Shards keep the folder: another shard may be starting in it right now.)
        if shard.whole and not out.chunk_files():
            out.discard_empty_start()
        raise
    timing = run_timing(time.perf_counter() - t0, rows_scored_now, tokens)
    device = {**device_info(p.device), "attn_implementation": model.attn_implementation}
    if model.note:
        device["scored"] = model.note
    return complete(out, p.shard, p.run, p.dataset.columns, timing, device, len(done))


def open_run(cfg: ScoreConfig, out: OutputDir) -> tuple[_Plan, ScoreResult | None]:
    """Plan the run and check ``out`` against it; the result is set when ``out`` already
    holds this run, finished."""
    shard = cfg.shard
    if cfg.overwrite and not shard.whole:
        raise UserError(
            "--overwrite would delete the other shards' work; empty OUT first, then run the shards"
        )
    p = plan(cfg)
    previous = out.previous_run()
    if previous is not None and not cfg.overwrite:
        # `all` and `last` mean the layers with a feed-forward block, known once the model
        # loads: those keys are compared then (check_previous), the rest now.
        follows = _layers_follow_model(cfg)
        num = p.run["model"]["num_layers"]
        ffn = previous.get("model", {}).get("ffn_layers", list(range(num)))  # set for hybrid stacks only
        expected = {**p.run, "model": _with_ffn(p.run["model"], ffn, num)}
        if follows:
            expected["layers"] = [max(ffn)] if cfg.layers.strip().lower() == "last" else ffn
        _refuse_changed(
            out, [k for k in changed_keys(previous, expected) if not (follows and k == "reference")]
        )
        manifest = out.read_manifest()
        if manifest is not None:
            out.cleanup_finished()
            choice = cfg.choice.resolved(expected["layers"], num)
            if RankChoice.from_dict(manifest["ranking"]) != choice:  # only the ranking differs
                return p, rerank(out.root, choice)
            return p, ScoreResult(str(out.root), "already complete", manifest)
    elif previous is None and out.is_foreign() and not cfg.overwrite:
        raise UserError(
            f"{out.root} is not empty and holds no anglecurate run; choose an empty "
            "or new --out folder (or pass --overwrite)"
        )
    if cfg.id_field is not None:
        dupes = p.dataset.duplicates(cfg.id_field)
        if dupes:
            raise UserError(
                f"--id-field {cfg.id_field} has repeated values (e.g. {dupes}); pick "
                "a unique id column or omit --id-field to use the row index"
            )

    return p, None


def _with_ffn(model: dict, ffn: list[int], num_layers: int) -> dict:
    """The run's model record, with the layers that have a feed-forward block when not all
    do (so a finished hybrid run is recognised without loading the model again)."""
    model = {k: v for k, v in model.items() if k != "ffn_layers"}
    return model if ffn == list(range(num_layers)) else {**model, "ffn_layers": ffn}


def _layers_follow_model(cfg: ScoreConfig) -> bool:
    return cfg.layers.strip().lower() in ("all", "last")


def settle_layers(cfg: ScoreConfig, p: _Plan, ffn: list[int], model_name: str) -> _Plan:
    """The scored layers once the model is loaded (``ffn``: its layers with a feed-forward
    block, :attr:`LoadedModel.ffn_layers`; ``model_name`` names it in errors): `all` and
    `last` keep to the layers that have one (every layer, in most models); a layer named in
    ``--layers`` without one is refused in one line."""
    if _layers_follow_model(cfg):
        layers = [max(ffn)] if cfg.layers.strip().lower() == "last" else ffn
    else:
        missing = [layer for layer in p.layers if layer not in ffn]
        if missing:
            raise UserError(
                f"--layers: layer {missing[0]} of {model_name} has no feed-forward block "
                f"(the signal is an MLP's input); layers with one: {', '.join(map(str, ffn))}"
            )
        layers = p.layers
    num = p.run["model"]["num_layers"]
    model_info = _with_ffn(p.run["model"], ffn, num)
    if layers == p.layers and model_info == p.run["model"]:
        return p
    choice, reference, by_layers = _layer_choice(cfg, layers, num)
    run = {**p.run, "model": model_info, **by_layers}
    _embed_layer(cfg, layers, num)  # `all` without a feed-forward block at the --embed layer
    return replace(p, layers=layers, choice=choice, reference=reference, run=run)


def check_previous(cfg: ScoreConfig, p: _Plan, out: OutputDir) -> None:
    """After :func:`settle_layers`: an unfinished run in ``out`` must match in its layers too."""
    previous = out.previous_run()
    if previous is not None and not cfg.overwrite:
        _refuse_changed(out, changed_keys(previous, p.run))


# What a run record's keys are to a user, where the key's own name says less.
KEY_NAMES = {"tokenizer": "chat template"}


def _refuse_changed(out: OutputDir, changed: list[str]) -> None:
    if changed:
        raise UserError(
            f"{out.root} holds a run with different {', '.join(KEY_NAMES.get(k, k) for k in changed)}; pass "
            "--overwrite to replace it or choose another --out"
        )


def start_run(cfg: ScoreConfig, p: _Plan, out: OutputDir) -> tuple[set[int], int]:
    """Claim ``out`` for this run (clearing it on --overwrite); returns the chunks this
    process already finished and the input rows they cover, for the resume."""
    if cfg.overwrite:
        out.clear()
    out.start(p.run, cfg.shard.tag)
    n_chunks = -(-p.dataset.num_rows // cfg.chunk_rows)
    done = out.done_chunks(cfg.shard.tag) & set(range(n_chunks))
    done_rows = sum(min(cfg.chunk_rows, p.dataset.num_rows - i * cfg.chunk_rows) for i in done)
    return done, done_rows


def score_chunk(
    index: int,
    frame: pl.DataFrame,
    cfg: ScoreConfig,
    p: _Plan,
    capture: AngleCapture,
    progress: RowProgress,
) -> tuple[pl.DataFrame, int, int]:
    """Score this shard's rows of chunk ``index``: (chunk file frame, tokens, rows scored)."""
    rows = np.arange(index * cfg.chunk_rows, index * cfg.chunk_rows + frame.height)
    if cfg.shard.whole:  # no per-row hashing or frame copy for an unsharded run
        scored, n_tokens = _score_chunk(frame, rows, cfg, p, capture, progress)
        return scored, n_tokens, frame.height
    mine = cfg.shard.mask(_uids(frame, rows, cfg))
    progress.advance(frame.height - int(mine.sum()))  # other shards' rows
    scored, n_tokens = _score_chunk(frame.filter(mine), rows[mine], cfg, p, capture, progress)
    return scored, n_tokens, int(mine.sum())


def _uids(frame: pl.DataFrame, rows: np.ndarray, cfg: ScoreConfig) -> list:
    """The uid of each row: the --id-field value, or the global row index."""
    return frame[cfg.id_field].to_list() if cfg.id_field else rows.tolist()


def prepare_rows(
    frame: pl.DataFrame, rows: np.ndarray, cfg: ScoreConfig, p: _Plan
) -> tuple[list, list[str], dict[int, Segmented]]:
    """Rows of one chunk (global indices ``rows``) to (uids, status per row, {row: Segmented}
    for rows to score); dict keys are positions within ``frame``."""
    n = frame.height
    values = frame[cfg.field].to_list()
    uids = _uids(frame, rows, cfg)
    status = [SCORED] * n
    rendered, rendered_rows = [], []
    for row, value in enumerate(values):
        try:
            if uids[row] is None:
                raise InvalidRow(f"--id-field {cfg.id_field} is null")
            rendered.append(p.spec.render(value)[1])
            rendered_rows.append(row)
        except InvalidRow as exc:
            if not cfg.skip_invalid:
                raise UserError(
                    f"{p.dataset.locate(int(rows[row]))}: {exc}; fix the row or pass "
                    "--skip-invalid to skip such rows"
                ) from exc
            status[row] = SkipReason.INVALID.value
    segmented = {}
    for row, seg in zip(rendered_rows, p.segmenter(rendered), strict=True):
        result = truncate(seg, cfg.max_length, cfg.on_long)
        if isinstance(result, SkipReason):
            status[row] = result.value
        else:
            segmented[row] = result
    return uids, status, segmented


def _score_chunk(
    frame: pl.DataFrame,
    global_rows: np.ndarray,
    cfg: ScoreConfig,
    p: _Plan,
    capture: AngleCapture,
    progress: RowProgress,
) -> tuple[pl.DataFrame, int]:
    """Score one chunk of rows; returns the chunk with score columns and its token count."""
    n = frame.height
    uids, status, segmented = prepare_rows(frame, global_rows, cfg, p)
    n_layers = len(p.layers)
    intra = np.full((n, n_layers), np.nan, dtype=np.float32)
    inter = np.full((n, n_layers), np.nan, dtype=np.float32)
    lengths = np.zeros((n, 3), dtype=np.int32)
    reference = np.full(n, np.nan) if p.reference is not None else None  # None: not computed
    embeddings = None  # [n, d] float32 with --embed, allocated once the width is known
    rows = list(segmented)
    tokens = 0
    planner = plan_packed if cfg.packed else plan_batches
    for batch_rows in planner([segmented[r].n_tokens for r in rows], p.batch_tokens):
        members = [rows[i] for i in batch_rows]
        items = [segmented[r] for r in members]
        batch = collate_packed(items) if cfg.packed else collate(items, p.spec.pad_id)
        c_intra, c_inter, values = capture.run(batch)
        intra[members] = c_intra.numpy()
        inter[members] = c_inter.numpy()
        if reference is not None:
            reference[members] = values.numpy()
        if capture.embeddings is not None:
            if embeddings is None:
                embeddings = np.full((n, capture.embeddings.shape[1]), np.nan, dtype=np.float32)
            embeddings[members] = capture.embeddings.numpy()
        batch_tokens = sum(s.n_tokens for s in items)
        tokens += batch_tokens
        progress.advance(len(members), batch_tokens)
    for r, s in segmented.items():
        lengths[r] = (s.n_tokens, s.n_prefix, s.n_question)
    progress.advance(n - len(segmented))

    # The score, rank and rank-layer columns are the ranking stage's (anglecurate.scoring.ranking).
    uid = frame[cfg.id_field].alias("uid") if cfg.id_field else pl.Series("uid", uids, pl.Int64)
    new = [
        uid,
        pl.Series("c_intra_layers", intra).cast(pl.List(pl.Float32)),
        pl.Series("c_inter_layers", inter).cast(pl.List(pl.Float32)),
        pl.Series("gainrl_reference", reference if reference is not None else [None] * n, pl.Float64),
        pl.Series("n_tokens", lengths[:, 0]),
        pl.Series("n_prefix", lengths[:, 1]),
        pl.Series("n_question", lengths[:, 2]),
        pl.Series("truncated", [r in segmented and segmented[r].truncated for r in range(n)], pl.Boolean),
        pl.Series(ROW, global_rows.astype(np.int64)),
        pl.Series(STATUS, status, pl.String),
    ]
    if p.embed is not None:  # a chunk with no scored row stores no width: an empty list
        new.append(pl.Series(EMBED, embeddings if embeddings is not None else [[]] * n, pl.List(pl.Float32)))
    return frame.with_columns(new), tokens


def inspect_row(cfg: ScoreConfig, row: int):
    """Render and segment one row as `score` would; returns (tokenizer, Segmented, uid)."""
    p = plan(cfg)
    if not 0 <= row < p.dataset.num_rows:
        raise UserError(
            f"--row {row} is out of range; {p.dataset.path} has "
            f"{p.dataset.num_rows} rows (0..{p.dataset.num_rows - 1})"
        )
    chunk = row // cfg.chunk_rows
    frame = p.dataset.read_chunk(chunk, cfg.chunk_rows)  # that chunk alone, not the file up to it
    record = frame.row(row - chunk * cfg.chunk_rows, named=True)
    uid = record[cfg.id_field] if cfg.id_field else row
    try:
        _, rendered = p.spec.render(record[cfg.field])
    except InvalidRow as exc:
        raise UserError(f"{p.dataset.locate(row)} (--row {row}): {exc}") from exc
    (seg,) = p.segmenter([rendered])
    return p.spec.tokenizer, seg, uid
