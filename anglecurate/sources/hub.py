"""Models and datasets named by a Hugging Face Hub id (``org/name``), resolved at the edge.

The local Hugging Face cache is asked first (``local_files_only``): a repository it holds
is used as it is, offline, at the revision its ref points to. Only when the cache lacks it,
and ``HF_HUB_OFFLINE`` is not set, is it downloaded with ``huggingface_hub`` (with its
progress bars on stderr), into the same cache. Either way the result is a local snapshot
folder and the commit it holds, which the manifest records.
"""

from __future__ import annotations

import re
from pathlib import Path

from anglecurate.base.errors import UserError, first_line

# A hub repository id, ``org/name``: what `--model` and `--data` try after a local path.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# What scoring needs from a model repository: config, tokenizer, chat template, weights.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja", "tokenizer*"]
LEGACY_WEIGHTS = ["*.bin"]  # only when the repository has no safetensors
PROBE_TIMEOUT_S = 10.0


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def snapshot(
    repo_id: str, repo_type: str = "model", revision: str | None = None, option: str = "--model"
) -> tuple[Path, str]:
    """(local snapshot folder, commit sha) of ``repo_id`` at ``revision`` (default: main)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # transformers depends on it, so only a broken install lands here
        raise UserError(
            f"{option} {repo_id}: hub ids need huggingface_hub: pip install huggingface_hub"
        ) from None
    patterns = MODEL_FILES if repo_type == "model" else None
    at = f" at revision {revision}" if revision else ""
    try:
        path = snapshot_download(
            repo_id, repo_type=repo_type, revision=revision, allow_patterns=patterns, local_files_only=True
        )
    except LocalEntryNotFoundError:
        if is_offline():
            raise UserError(
                f"{option} {repo_id}{at} is neither a local path nor in the local Hugging Face cache, "
                "and HF_HUB_OFFLINE is set; "
                f"download it where the hub is reachable (hf download {repo_id}"
                f"{' --repo-type dataset' if repo_type == 'dataset' else ''}) or unset HF_HUB_OFFLINE"
            ) from None
        path = _download(repo_id, repo_type, revision, patterns, option, at)
    return Path(path), Path(path).name


def _download(repo_id, repo_type, revision, patterns, option, at) -> str:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kind = "dataset" if repo_type == "dataset" else "model"
    try:
        # One request first, without the download's retries: an unreachable hub, a missing
        # repository or revision is then one line at once, not half a minute of retrying.
        info = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, timeout=PROBE_TIMEOUT_S)
        files = [s.rfilename for s in info.siblings or []]
        if patterns is not None and not any(f.endswith(".safetensors") for f in files):
            patterns = patterns + LEGACY_WEIGHTS
        return snapshot_download(repo_id, repo_type=repo_type, revision=revision, allow_patterns=patterns)
    except GatedRepoError as exc:
        raise UserError(
            f"{option} {repo_id} is gated: accept its terms on the hub, then log in (hf auth login)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise UserError(f"{option} {repo_id} has no revision {revision}; check --revision") from exc
    except RepositoryNotFoundError as exc:
        raise UserError(
            f"{option} {repo_id}: no such {kind} on the hub (or it is private: log in with hf auth login); "
            "a local path must exist"
        ) from exc
    except Exception as exc:  # no connection, a proxy, a timeout: whatever the HTTP stack raises
        raise UserError(
            f"{option} {repo_id}{at} is neither a local path nor in the local Hugging Face cache, and the "
            "hub cannot be reached "
            f"({first_line(exc)}); connect, or download it elsewhere into HF_HUB_CACHE"
        ) from exc
