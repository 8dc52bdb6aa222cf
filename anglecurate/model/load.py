"""Model loading: files, devices and dtypes live here, at the edge.

A model is a local Hugging Face directory (``config.json`` plus safetensors) or a ``.gguf``
file (dequantised by transformers). Only the base model is loaded (no LM head), offline,
without remote code unless asked for.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import torch

from anglecurate.base.errors import UserError, first_line
from anglecurate.model.layers import LoadedModel, wrap_model

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a directory, plus the GGUF file name inside it if any."""

    path: Path  # the directory, or the .gguf file itself
    directory: Path
    gguf_file: str | None
    hub_id: str | None = None  # set when --model named a hub repository
    revision: str | None = None  # the commit of its snapshot

    @property
    def provenance(self) -> dict:
        """What the manifest records of where the model came from."""
        hub = {"hub_id": self.hub_id, "revision": self.revision} if self.hub_id else {}
        return {"path": str(self.path), **hub}

    @property
    def load_kwargs(self) -> dict:
        kwargs = {"local_files_only": True}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def resolve_source(spec: str, revision: str | None = None) -> ModelSource:
    """``--model``: a local directory, a ``.gguf`` file, ``builtin:NAME``, or a hub id
    (``org/name``, at ``revision``) taken from the local Hugging Face cache or downloaded."""
    from anglecurate.sources.builtin import resolve_builtin_model
    from anglecurate.sources.hub import HUB_ID

    path = resolve_builtin_model(spec) if spec.startswith("builtin:") else Path(spec)
    if revision is not None and (path.exists() or not HUB_ID.match(spec)):
        raise UserError(f"--revision {revision} applies to hub ids; {spec} is a local path")
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.resolve(), path.resolve().parent, path.name)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(path.resolve(), path.resolve(), None)
    if path.is_dir():
        raise UserError(
            f"model directory {spec} has no config.json; point --model at a "
            "Hugging Face model directory or a .gguf file"
        )
    if HUB_ID.match(spec) and not path.exists():
        from anglecurate.sources.hub import snapshot

        folder, sha = snapshot(spec, "model", revision, "--model")
        if not (folder / "config.json").is_file():
            raise UserError(f"--model {spec}: its snapshot ({folder}) has no config.json")
        return ModelSource(folder, folder, None, hub_id=spec, revision=sha)
    raise UserError(
        f"model {spec!r} not found: pass a local Hugging Face model directory, a .gguf file, "
        "or a hub id (org/name)"
    )


def _gguf_utils():
    try:
        from transformers import modeling_gguf_pytorch_utils
    except ImportError:  # older or newer layouts: nothing to silence
        return None
    return modeling_gguf_pytorch_utils


@contextmanager
def _hub_sealed():
    """Quiet while transformers loads files; everything it touches restored exactly afterwards.

    ``local_files_only`` keeps loading off the hub, so the process environment is left alone.
    Our own progress bar and errors speak for the run, so transformers' logging (its library
    logger's own level, NOTSET included) and its progress bars, and the tqdm bar that GGUF
    dequantisation draws (bound at import, so swapped), are silenced meanwhile, whatever the
    load raises.
    """
    from transformers.utils import logging

    root = logging._get_library_root_logger()
    with ExitStack() as stack:
        stack.enter_context(patch.object(logging, "_tqdm_active", False))
        gguf_utils = _gguf_utils()
        if getattr(gguf_utils, "tqdm", None) is not None:
            stack.enter_context(patch.object(gguf_utils, "tqdm", lambda iterable, *args, **kwargs: iterable))
        level = root.level
        stack.callback(root.setLevel, level)  # setLevel, not the attribute: it clears logging's cache
        root.setLevel(logging.ERROR)
        yield


def has_chat_template(source: ModelSource) -> bool:
    """Whether the model ships a chat template, read from its files without loading the
    tokenizer (a GGUF tokenizer takes seconds): GGUF metadata, or the tokenizer config."""
    if source.gguf_file:
        try:
            from gguf import GGUFReader
        except ImportError:  # transformers needs gguf to load the file at all; it will say so
            return True
        try:
            return "tokenizer.chat_template" in GGUFReader(str(source.path)).fields
        except Exception as exc:
            raise UserError(f"cannot read the GGUF file {source.path}: {first_line(exc)}") from exc
    folder = source.directory
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return True  # no readable tokenizer config: let the tokenizer itself decide
    return bool(config.get("chat_template"))


def _from_pretrained(auto, source: ModelSource, failure: str, **kwargs):
    """``auto.from_pretrained`` on the source's files, offline and quiet; a failure is one
    line: ``failure``, the path, and the library's own first line."""
    try:
        with _hub_sealed():
            return auto.from_pretrained(source.directory, **kwargs, **source.load_kwargs)
    except Exception as exc:
        raise UserError(f"{failure} {source.path}: {first_line(exc)}") from exc


def load_config(source: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoConfig

    config = _from_pretrained(
        AutoConfig, source, "cannot read the model config at", trust_remote_code=trust_remote_code
    )
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(
            f"{config.model_type} is an encoder-decoder model; anglecurate scores "
            "decoder-only causal LMs (Llama, Qwen2, Mistral families)"
        )
    if not getattr(config.get_text_config(), "num_hidden_layers", None):
        raise UserError(
            f"model type {config.model_type!r} has no num_hidden_layers in its config (nor in a "
            "text_config); anglecurate cannot tell how many decoder layers to look for"
        )
    return config


def is_multimodal(config) -> bool:
    """A model whose language model is one part among others (Qwen2.5-VL, Gemma 3 4B+):
    its config holds the decoder's in ``text_config``."""
    return config.get_text_config() is not config


def num_layers(config) -> int:
    """The decoder's layer count (the language model's, in a multimodal config)."""
    return config.get_text_config().num_hidden_layers


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(
        AutoTokenizer, source, "cannot load the tokenizer at", trust_remote_code=trust_remote_code
    )
    processor_template = source.directory / "chat_template.json"  # multimodal repos keep it there
    if not getattr(tokenizer, "chat_template", None) and processor_template.is_file():
        try:
            tokenizer.chat_template = json.loads(processor_template.read_text())["chat_template"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"cannot read the chat template in {processor_template}: {exc}") from exc
    return tokenizer


def config_hash(config) -> str:
    """Hash of the architecture config, without fields that vary across saves."""
    data = config.to_dict()
    for volatile in (
        "transformers_version",
        "_name_or_path",
        "torch_dtype",
        "dtype",
        "architectures",
        "_commit_hash",
        "_attn_implementation_autoset",
    ):
        data.pop(volatile, None)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_dtype(config) -> torch.dtype:
    # transformers 5 names it ``dtype`` and warns on ``torch_dtype``; 4.x has only the latter.
    dtype = config.dtype if hasattr(type(config), "dtype") or "dtype" in vars(config) else None
    if dtype is None and "torch_dtype" in vars(config):
        dtype = vars(config)["torch_dtype"]
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def resolve_dtype(choice: str, config, device: torch.device) -> torch.dtype:
    """``auto`` = the checkpoint's dtype (a GGUF file is dequantised to fp32)."""
    if choice == "auto":
        dtype = checkpoint_dtype(config)
        if dtype == torch.float16 and device.type == "cpu":
            return torch.float32  # fp16 matmuls are slow or missing on CPU
        return dtype
    if choice not in DTYPES:
        raise UserError(f"--dtype {choice!r} is not one of auto, bf16, fp32, fp16")
    return DTYPES[choice]


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if choice not in ("cpu", "cuda") and not choice.startswith("cuda:"):
        raise UserError(f"--device {choice!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device(choice)


def load_model(
    source: ModelSource,
    config,
    dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool = False,
    attn_implementation: str = "auto",
    causal_lm: bool = False,
) -> LoadedModel:
    """The base model (scoring), or with ``causal_lm`` the model with its LM head (validate's
    backward passes); in eval mode either way.

    ``attn_implementation`` "auto" lets transformers pick (SDPA where the model supports it,
    eager where not: Gemma 2, gpt-oss, BLOOM, MPT, ...); the choice made is recorded. For a
    multimodal checkpoint the language model inside is scored, on text-only prompts."""
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if causal_lm else AutoModel
    base = _from_pretrained(
        auto,
        source,
        "cannot load model weights from",
        config=config,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        attn_implementation=None if attn_implementation == "auto" else attn_implementation,
    )
    base = base.eval().to(device)
    note = None
    if is_multimodal(config) and not causal_lm:
        whole, base = type(base).__name__, base.get_decoder()  # the language model: ids in, states out
        note = f"the language model ({type(base).__name__}) of {whole}, on text-only prompts"
    model = wrap_model(base, num_layers(config), config.get_text_config().hidden_size)
    model.note = note
    return model
