"""`score --engine ray`: the same run, its chunks spread over a Ray actor pool.

Ray Data carries the work: a dataset of the chunk indices still to score, mapped with
``map_batches`` over a pool of ``num_workers`` actors. Each actor plans the run and loads
the model once, reads its chunks with anglecurate's own reader (so the data file and
``OUT`` must be on storage every node sees) and writes each scored chunk file into
``OUT`` itself, the unit of resume. The driver then builds the global ranking and the
manifest exactly as a single process does, so a Ray run, a local run and a sharded run of
the same options give the same output, and any of them can resume the others' chunks.
On a cluster with GPUs each actor takes one (``num_gpus=1``); otherwise actors are CPU
processes.
"""

from __future__ import annotations

import logging
import time

from anglecurate.base.errors import UserError
from anglecurate.base.progress import RowProgress
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.merge import complete
from anglecurate.scoring.result import ScoreResult, run_timing
from anglecurate.scoring.store import OutputDir
from anglecurate.storage.lock import exclusive_writer


class ChunkScorer:
    """A Ray Data actor: the model loaded once, then chunk indices in, chunk files out."""

    def __init__(self, cfg: ScoreConfig):
        from contextlib import ExitStack

        from anglecurate.scoring.capture import angle_capture
        from anglecurate.scoring.pipeline import plan, settle_layers

        self.cfg = cfg
        p = plan(cfg)
        model = p.spec.load_model(p.dtype, p.device)
        # The same settling the driver did from its probe (see _feed_forward_layers): every
        # actor scores exactly the layers the run records.
        self.p = settle_layers(cfg, p, model.ffn_layers, type(model.base).__name__)
        self._stack = ExitStack()  # the hooks stay in place for the actor's lifetime
        self.capture = self._stack.enter_context(
            angle_capture(model, self.p.layers, self.p.reference, embed=self.p.embed)
        )
        self.out = OutputDir(cfg.out)

    def __call__(self, batch: dict) -> dict:
        from anglecurate.scoring.pipeline import score_chunk

        rows, scored_rows, tokens = [], [], []
        for index in (int(i) for i in batch["chunk"]):
            # Random access: a JSONL chunk is a seek, not a re-read of the file up to it.
            frame = self.p.dataset.read_chunk(index, self.cfg.chunk_rows)
            scored, n_tokens, n_rows = score_chunk(
                index, frame, self.cfg, self.p, self.capture, RowProgress(enabled=False)
            )
            self.out.write_chunk(index, scored, self.cfg.shard.tag)
            rows.append(frame.height)
            scored_rows.append(n_rows)
            tokens.append(n_tokens)
        return {"chunk": batch["chunk"], "rows": rows, "scored": scored_rows, "tokens": tokens}


def score_on_ray(
    cfg: ScoreConfig, num_workers: int, address: str | None = None, progress: RowProgress | None = None
) -> ScoreResult:
    """Score ``cfg`` with ``num_workers`` Ray actors; resumes like the local engine."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'anglecurate[ray]'") from None
    if num_workers < 1:
        raise UserError("--num-workers must be at least 1")
    progress = progress or RowProgress(enabled=False)
    out = OutputDir(cfg.out)
    with exclusive_writer(out.root, lock=cfg.shard.whole):
        return _score_on_ray(ray, cfg, out, num_workers, address, progress)


def _score_on_ray(ray, cfg: ScoreConfig, out: OutputDir, num_workers, address, progress) -> ScoreResult:
    from anglecurate.scoring.manifest import device_info
    from anglecurate.scoring.pipeline import check_previous, open_run, settle_layers, start_run

    p, finished = open_run(cfg, out)
    if finished is not None:
        return finished
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise UserError(f"cannot reach the Ray cluster at {address}: {exc}") from exc
    _quiet_ray_data(ray)
    t0 = time.perf_counter()
    tokens = rows = 0
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ffn, name = ray.get(
            ray.remote(num_gpus=gpus, num_cpus=0 if gpus else 1)(_feed_forward_layers).remote(cfg)
        )
        p = settle_layers(cfg, p, ffn, name)
        check_previous(cfg, p, out)
        done, done_rows = start_run(cfg, p, out)
        todo = [i for i in range(-(-p.dataset.num_rows // cfg.chunk_rows)) if i not in done]
        work = ray.data.from_items([{"chunk": i} for i in todo], override_num_blocks=max(len(todo), 1))
        results = work.map_batches(
            ChunkScorer,
            fn_constructor_kwargs={"cfg": cfg},
            batch_size=1,
            concurrency=num_workers,
            num_gpus=gpus,
            num_cpus=0 if gpus else 1,
        )
        progress.start("scoring on ray", total=p.dataset.num_rows, completed=done_rows)
        for row in results.iter_rows() if todo else ():
            rows += int(row["scored"])  # this shard's rows; progress counts the whole chunk
            tokens += int(row["tokens"])
            progress.advance(int(row["rows"]), int(row["tokens"]))
    except Exception as exc:  # a user error inside an actor comes back wrapped by Ray
        cause = _user_error(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        if started_here:
            ray.shutdown()
    timing = run_timing(time.perf_counter() - t0, rows, tokens)
    device = {**device_info(p.device), "engine": "ray", "workers": num_workers}
    return complete(out, cfg.shard, p.run, p.dataset.columns, timing, device, len(done))


def _feed_forward_layers(cfg: ScoreConfig) -> tuple[list[int], str]:
    """On a cluster worker: the layers of the model that have a feed-forward block, and its
    class name. `all` and `last` mean those layers (a hybrid stack has layers without one),
    which only a loaded model tells; the driver settles the run's layers from this before
    any actor scores, exactly as the local engine does once it has loaded the model."""
    from anglecurate.scoring.pipeline import plan

    p = plan(cfg)
    model = p.spec.load_model(p.dtype, p.device)
    return model.ffn_layers, type(model.base).__name__


def _quiet_ray_data(ray) -> None:
    """Our progress bar reports the run; Ray Data's own bars and INFO lines would bury it."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _user_error(exc: BaseException) -> UserError | None:
    """The UserError an actor raised, found in Ray's wrapping (cause chain or message)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None
