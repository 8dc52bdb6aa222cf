"""``--devices``: one scoring process per device on this machine, without torchrun.

Each child is the same ``anglecurate score`` command with ``--shard i/N --device D`` added
(and ``--devices`` removed); the children share ``OUT`` and the one that finishes last
builds the global ranking. No collectives: shards never talk to each other. The launch
reports what a single run would: "complete" with the children's rows and tokens over its
own wall time, or "already complete" when ``OUT`` was finished before it started.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

from anglecurate.base.errors import UserError
from anglecurate.scoring.merge import merge
from anglecurate.scoring.result import ScoreResult, run_timing
from anglecurate.scoring.store import OutputDir


def parse_devices(spec: str) -> list[str]:
    """``0,1,2,3`` (CUDA indices), ``cuda:0,cuda:1`` or ``cpu,cpu`` to a list of devices."""
    devices = []
    for part in (p.strip() for p in spec.split(",")):
        if part.isdigit():
            devices.append(f"cuda:{part}")
        elif part == "cpu" or part.startswith("cuda:") and part[5:].isdigit():
            devices.append(part)
        else:
            raise UserError(
                f"--devices {spec!r}: list CUDA indices (0,1,2,3), cuda:N or cpu, comma-separated"
            )
    if len(devices) < 2:
        raise UserError("--devices needs at least two devices; for one, use --device")
    return devices


def strip_option(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """``argv`` without ``--name value`` / ``--name=value`` for each of ``names``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(name + "=") for name in names):
            continue
        kept.append(arg)
    return kept


# ScoreConfig fields whose command-line option has another name.
CLI_NAMES = {"data_config": "config"}


def score_argv(cfg) -> list[str]:
    """The `anglecurate score` arguments that reproduce the ScoreConfig ``cfg`` (its shard
    aside): what each child of ``--devices`` runs, whether the CLI or the API started it."""
    from anglecurate.scoring.config import ScoreConfig

    defaults = ScoreConfig(model="", data="", out="")
    argv = ["score"]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "shard" or (
            f.name not in ("model", "data", "out") and value == getattr(defaults, f.name)
        ):
            continue
        flag = "--" + CLI_NAMES.get(f.name, f.name).replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def run_shards(argv: list[str], devices: list[str]) -> list[tuple[str, int, str]]:
    """Run one child per device; returns (device, exit code, last stderr line) per child."""
    base = strip_option(argv, ("--devices", "--device", "--shard"))
    count = len(devices)
    children = []
    for index, device in enumerate(devices):
        shard = ["--shard", f"{index}/{count}", "--device", device, "--quiet"]
        cmd = [sys.executable, "-m", "anglecurate", *base, *shard]
        children.append(
            (device, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        )
    results = []
    try:
        for device, child in children:
            _, err = child.communicate()
            last = next((line for line in reversed(err.strip().splitlines()) if line.strip()), "")
            results.append((device, child.returncode, last))
    except KeyboardInterrupt:
        for _, child in children:
            child.terminate()
        time.sleep(0.5)
        raise
    return results


def score_on_devices(cfg, spec: str) -> ScoreResult:
    """Score ``cfg`` with one child per device of ``spec`` and return the merged result."""
    devices = parse_devices(spec)
    finished_before = OutputDir(cfg.out).read_manifest() is not None
    t0 = time.perf_counter()
    failed = [r for r in run_shards(score_argv(cfg), devices) if r[1] != 0]
    if failed:
        device, code, last = failed[0]
        raise UserError(
            f"{len(failed)} shard(s) failed; on {device} (exit {code}): {last or 'no message'}; "
            "rerun the same command to resume"
        )
    result = merge(cfg.out)  # the last child merged: "already complete" unless it was before
    if finished_before:
        return result
    wall = time.perf_counter() - t0
    shards = result.manifest["timing"]  # the children's rows and tokens, summed by the merge
    timing = {**run_timing(wall, shards["rows_this_run"], shards["tokens_this_run"]), "shards": len(devices)}
    return ScoreResult(result.out, "complete", {**result.manifest, "timing": timing})
