"""What to generate and what came back: the types every engine takes and returns.

A :class:`GenerationRequest` holds prompts already rendered as text (the chat template with
the generation prompt, as TRL renders them for training), how many completions each gets
(``k``), how long they may run, the temperature and the seed. A :class:`GenerationResult`
holds, per prompt and per sample, the generated token ids up to and including the first
stop token (what TRL counts as a completion) and their decoded text.

Randomness is keyed, not streamed: sample ``j`` of prompt ``i`` draws from its own seed,
``sample_seed(seed, stream_i, j)``, where ``stream_i`` is the prompt's position unless the
caller names it (a row index, so that a resumed rollout over the rest of a sample draws what
the whole would have). So what a prompt gets does not depend on which prompts share its batch,
the batch budget or the engine's ordering (see each engine for the exact guarantee).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from anglecurate.base.errors import UserError


def render_prompts(tokenizer, prompts: Sequence) -> tuple[list[str], bool]:
    """(each prompt as the text the policy is given, whether the chat template rendered it).

    Conversations (lists of messages) go through the tokenizer's chat template with the
    generation prompt; plain strings are used as they are, as TRL does for a model without
    a template."""
    if prompts and isinstance(prompts[0], list):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
        ]
        return texts, True
    return [str(p) for p in prompts], False


def sample_seed(seed: int, stream: int, sample: int = 0) -> int:
    """A 63-bit seed for sample ``sample`` of the prompt keyed ``stream`` under ``seed``.

    A hash, not ``seed + stream``: nearby seeds and streams must not share draws (seed 1's
    prompt 0 would otherwise be seed 0's prompt 1)."""
    digest = hashlib.blake2b(f"{seed}/{stream}/{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class GenerationRequest:
    """``k`` completions of at most ``max_new_tokens`` tokens for each prompt.

    ``prompts`` are kept as the dataset holds them (the reward receives them, as in TRL);
    ``texts`` are the same prompts rendered; ``chat`` says the chat template rendered them,
    so no special tokens are added again when they are tokenized. ``temperature`` 0 is
    greedy (then ``k`` must be 1: k greedy samples are one sample k times)."""

    prompts: tuple
    texts: tuple[str, ...]
    chat: bool
    max_new_tokens: int
    k: int = 1
    temperature: float = 0.0
    seed: int = 0
    streams: tuple[int, ...] | None = None

    def __post_init__(self):
        if len(self.texts) != len(self.prompts):
            raise ValueError(f"{len(self.texts)} rendered texts for {len(self.prompts)} prompts")
        if self.max_new_tokens < 1:
            raise UserError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if self.k < 1:
            raise UserError(f"samples per prompt must be at least 1, got {self.k}")
        if not self.temperature >= 0:  # also refuses NaN
            raise UserError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.temperature == 0 and self.k > 1:
            raise UserError(
                f"{self.k} samples per prompt at temperature 0 are one greedy answer {self.k} times; "
                "pass a temperature above 0"
            )
        if self.streams is not None and len(self.streams) != len(self.prompts):
            raise ValueError(f"{len(self.streams)} streams for {len(self.prompts)} prompts")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def __len__(self) -> int:
        return len(self.prompts)

    def stream(self, i: int) -> int:
        """The key of prompt ``i``'s random draws: its position, or the stream named for it."""
        return i if self.streams is None else int(self.streams[i])

    def seed_of(self, i: int, sample: int = 0) -> int:
        return sample_seed(self.seed, self.stream(i), sample)


def make_request(
    tokenizer,
    prompts: Sequence,
    max_new_tokens: int,
    *,
    k: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    streams: Sequence[int] | None = None,
) -> GenerationRequest:
    """A request for ``prompts`` (conversations or strings), rendered by ``tokenizer``."""
    texts, chat = render_prompts(tokenizer, prompts)
    return GenerationRequest(
        prompts=tuple(prompts),
        texts=tuple(texts),
        chat=chat,
        max_new_tokens=max_new_tokens,
        k=k,
        temperature=float(temperature),
        seed=seed,
        streams=None if streams is None else tuple(int(s) for s in streams),
    )


def prompt_ids(tokenizer, request: GenerationRequest) -> list[list[int]]:
    """Each rendered prompt as token ids, unpadded: the same ids for every engine."""
    if not request.texts:
        return []
    encoded = tokenizer(list(request.texts), add_special_tokens=not request.chat)["input_ids"]
    return [list(map(int, ids)) for ids in encoded]


def stop_ids(model, tokenizer) -> frozenset[int]:
    """The token ids that end a completion: the model's generation config's EOS ids (one or
    a list) and the tokenizer's EOS."""
    found: set[int] = set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    found |= set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return frozenset(int(t) for t in found)


def through_stop(ids: Sequence[int], stops: frozenset[int]) -> list[int]:
    """``ids`` up to and including the first stop token (all of them when none is there):
    padding after a finished completion is not part of it, the stop token is."""
    out = []
    for t in ids:
        out.append(int(t))
        if t in stops:
            break
    return out


@dataclass(frozen=True)
class GenerationResult:
    """What an engine generated for a request.

    ``token_ids[i][j]``    sample ``j`` of prompt ``i``: generated ids through the first stop
                           token (``k`` lists per prompt, ints)
    ``completions[i][j]``  the same decoded, special tokens skipped
    ``prompt_tokens[i]``   prompt ``i``'s length in tokens
    ``engine``             ``"hf"`` or ``"vllm"``
    """

    request: GenerationRequest
    token_ids: list[list[list[int]]]
    completions: list[list[str]]
    prompt_tokens: list[int]
    engine: str

    @classmethod
    def decode(cls, tokenizer, request, prompt_ids: list[list[int]], token_ids, engine: str):
        """The result of ``token_ids`` ([prompt][sample] lists) generated for ``request``
        from ``prompt_ids``, decoded with special tokens skipped, as every engine decodes."""
        flat = [ids for row in token_ids for ids in row]
        texts = iter(tokenizer.batch_decode(flat, skip_special_tokens=True) if flat else [])
        completions = [[next(texts) for _ in row] for row in token_ids]
        return cls(request, token_ids, completions, [len(p) for p in prompt_ids], engine)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated over every sample, stop tokens included (TRL's count)."""
        return sum(len(ids) for row in self.token_ids for ids in row)
