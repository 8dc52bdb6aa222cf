"""Provenance: the run's options (compared on resume) and the final manifest."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime

import torch

from anglecurate.base import __version__

SCORE_DEFINITION = (
    "metric angles: score = w_intra * c_intra + w_inter * c_inter at the ranking layer; c_intra is "
    "the mean cosine over pairs of distinct question tokens, c_inter the mean cosine between "
    "question and prefix tokens, of the MLP input (post-attention norm output) of that layer; "
    "NaN when a segment has too few tokens. metric gainrl-reference: the authors' per-prompt "
    "value (docs/method.md). score_length_controlled: the score minus a monotone fit on question "
    "length; rank follows it when length_control is true"
)


def versions() -> dict:
    import polars
    import transformers

    return {
        "anglecurate": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "polars": polars.__version__,
    }


def device_info(device: torch.device) -> dict:
    info = {"type": device.type, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
        info["cpu_count"] = os.cpu_count()
    return info


# Options that only choose the ranking: a run may change them (they do not touch chunk files).
RANKING_KEYS = frozenset({"ranking"})


def changed_keys(previous: dict, current: dict) -> list[str]:
    """Top-level keys whose values differ (JSON-normalised), ranking options aside; empty
    when the runs match. The dataset is the same where its content fingerprint is: a folder
    moved or copied elsewhere (with its input beside it) resumes instead of being refused."""
    normal = json.loads(json.dumps(current, default=str))
    keys = sorted((set(previous) | set(normal)) - RANKING_KEYS)
    return [k for k in keys if _identity(k, previous.get(k)) != _identity(k, normal.get(k))]


def _identity(key: str, value):
    """What a run record's entry means for resume: the dataset's path is where it was read
    from (provenance), not what it is (its ``fingerprint``)."""
    if key == "dataset" and isinstance(value, dict) and value.get("fingerprint"):
        return {k: v for k, v in value.items() if k != "path"}
    return value


def build_manifest(run: dict, ranking: dict, device: dict, timing: dict, counts: dict, outputs: dict) -> dict:
    """``device``: :func:`device_info` of the device that scored (with ``shards``, each shard's);
    ``ranking``: the choice that ordered the rows, with its NaN count and length fit."""
    run = {k: v for k, v in run.items() if k != "ranking"}
    return {
        "anglecurate_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "score_definition": SCORE_DEFINITION,
        "run": run,
        "ranking": ranking,
        "versions": versions(),
        "device": device,
        "timing": timing,
        "counts": counts,
        "outputs": outputs,
    }
