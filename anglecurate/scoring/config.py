"""Options of a scoring run, validated before any file is touched."""

from __future__ import annotations

from dataclasses import dataclass

from anglecurate.base.errors import UserError
from anglecurate.data.shard import Shard
from anglecurate.scoring.ranking import RankChoice, resolve_layer
from anglecurate.sources.builtin import builtin_id_field

# Attention kernels transformers can run packed batches with: sdpa and eager with a
# block-diagonal mask, flex_attention with document masks, flash-attention padding-free.
# "auto": transformers' own choice, SDPA where the model supports it and eager otherwise.
ATTENTION = ("auto", "sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
# Of those, the ones whose cost follows each prompt's own length (padding-free).
VARLEN_ATTENTION = ("flex_attention", "flash_attention_2", "flash_attention_3")


@dataclass
class ScoreConfig:
    """Everything `anglecurate score` takes; the CLI builds one and calls the pipeline."""

    model: str
    data: str
    out: str
    revision: str | None = None  # of a hub model id
    split: str = "train"  # of a hub dataset or a DatasetDict folder
    data_config: str | None = None  # a hub dataset's configuration (subset)
    field: str = "prompt"
    id_field: str | None = None  # None: the row index (a built-in dataset's own id column)
    prompt_config: str = "default"
    chat_template: str | None = None
    layers: str = "all"
    rank_layer: int | None = None  # None: the deepest scored layer
    w_intra: float = 1.0
    w_inter: float = 1.0
    metric: str = "angles"  # or "gainrl-reference": the authors' per-prompt value
    length_control: bool = False
    nan_policy: str = "last"
    ref_prefix: int | None = None  # the authors' P and S; None: each prompt's template's
    ref_suffix: int | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_length: int = 4096
    on_long: str = "skip"
    max_batch_tokens: int | None = None  # None: by device, see batch_budget()
    chunk_rows: int = 1024
    shard_rows: int = 50000
    skip_invalid: bool = False
    overwrite: bool = False
    trust_remote_code: bool = False
    packing: str = "auto"  # on: one packed sequence per batch; auto: on with a varlen attention
    attn_implementation: str = "auto"
    shard: Shard = Shard()  # i/N: score only shard i's rows (frozen, so a safe default)
    embed: int | None = None  # a scored layer: store its pooled question tokens (embeddings.safetensors)

    def __post_init__(self) -> None:
        if self.id_field is None:  # builtin:arithmetic: its own uid column
            self.id_field = builtin_id_field(self.data)

    @property
    def choice(self) -> RankChoice:
        """The ranking options (layer unresolved); `anglecurate rank` takes the same."""
        return RankChoice(
            self.metric, self.rank_layer, self.w_intra, self.w_inter, self.length_control, self.nan_policy
        )

    @property
    def packed(self) -> bool:
        """Pack batches: when asked, or (auto) when the attention kernel is padding-free;
        with SDPA a packed row pays attention over the whole row, so auto pads instead."""
        return self.packing == "on" or (
            self.packing == "auto" and self.attn_implementation in VARLEN_ATTENTION
        )

    def validate(self) -> None:
        if self.on_long not in ("skip", "truncate"):
            raise UserError(f"--on-long {self.on_long!r} must be 'skip' or 'truncate'")
        for name in ("max_length", "max_batch_tokens", "chunk_rows", "shard_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.packing not in ("auto", "on", "off"):
            raise UserError(f"--packing {self.packing!r} must be auto, on or off")
        if self.attn_implementation not in ATTENTION:
            raise UserError(
                f"--attn-implementation {self.attn_implementation!r}: choose one of {', '.join(ATTENTION)}"
            )
        self.choice.validate()
        for name in ("ref_prefix", "ref_suffix"):
            value = getattr(self, name)
            if value is not None and (value < 0 or self.metric != "gainrl-reference"):
                option = "--" + name.replace("_", "-")
                raise UserError(
                    f"{option} takes a length in tokens (0 or more) with --metric gainrl-reference"
                )


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """``all``, ``last`` or comma-separated indices (negative counts from the end)."""
    spec = spec.strip().lower()
    if spec == "all":
        return list(range(num_layers))
    if spec == "last":
        return [num_layers - 1]
    indices = []
    for part in spec.split(","):
        try:
            index = int(part)
        except ValueError:
            raise UserError(
                f"--layers {spec!r}: use 'all', 'last' or comma-separated integers like 0,12,-1"
            ) from None
        indices.append(resolve_layer(index, num_layers, "--layers"))
    return sorted(set(indices))


# Measured (docs/perf.md): on CPU, small batches stay in cache and run faster than large
# ones; a GPU needs large batches to fill its matrix units.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}


def batch_budget(max_batch_tokens: int | None, device_type: str) -> int:
    if max_batch_tokens is not None:
        return max_batch_tokens
    return DEFAULT_BATCH_TOKENS.get(device_type, DEFAULT_BATCH_TOKENS["cuda"])
