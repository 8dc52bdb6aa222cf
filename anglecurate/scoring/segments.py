"""Token segmentation: prefix, question and suffix spans from character offsets.

The rendered prompt is tokenized once with offsets (``add_special_tokens=False``: the chat
template already wrote whatever BOS or role tokens the model expects, exactly as
``apply_chat_template(tokenize=True)`` does). A token belongs to the question when its
character span overlaps the question's span; the prefix is every token before the first
question token and the suffix every token after the last one. A token that straddles the
boundary (a merge of a newline with the first word, say) therefore counts as question.
Nothing depends on a template's layout or on hard-coded offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from anglecurate.base.errors import UserError
from anglecurate.scoring.prompt import RenderedPrompt


class SkipReason(StrEnum):
    """Why a row was not scored; the value is what the manifest and skipped file record."""

    TOO_LONG = "too_long"  # longer than --max-length with --on-long skip
    PREFIX_TOO_LONG = "prefix_too_long"  # truncation would leave no question token
    INVALID = "invalid"  # malformed prompt field, with --skip-invalid


@dataclass(frozen=True)
class Segmented:
    """One tokenized prompt: ids and the lengths of its three consecutive segments."""

    input_ids: list[int]
    n_prefix: int
    n_question: int
    n_suffix: int
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def question_token_span(offsets: list[tuple[int, int]], q_start: int, q_end: int) -> tuple[int, int]:
    """Token index range [first, last + 1) of the tokens overlapping chars [q_start, q_end)."""
    hits = [i for i, (s, e) in enumerate(offsets) if s < q_end and e > q_start]
    if not hits:
        raise ValueError("no token covers the question text")
    return hits[0], hits[-1] + 1


def segment(input_ids: list[int], offsets: list[tuple[int, int]], rendered: RenderedPrompt) -> Segmented:
    first, end = question_token_span(offsets, rendered.q_start, rendered.q_end)
    return Segmented(input_ids, first, end - first, len(input_ids) - end)


def truncate(seg: Segmented, max_length: int, on_long: str) -> Segmented | SkipReason:
    """Apply the --max-length policy: keep as is, skip, or cut from the right.

    Truncation keeps the first ``max_length`` tokens: the whole prefix, as much of the
    question as fits, and no suffix. It refuses (skips) when not one question token fits.
    """
    if seg.n_tokens <= max_length:
        return seg
    if on_long == "skip":
        return SkipReason.TOO_LONG
    if seg.n_prefix + 1 > max_length:
        return SkipReason.PREFIX_TOO_LONG
    n_question = min(seg.n_question, max_length - seg.n_prefix)
    n_suffix = max_length - seg.n_prefix - n_question
    return Segmented(seg.input_ids[:max_length], seg.n_prefix, n_question, n_suffix, True)


class Segmenter:
    """Tokenizes rendered prompts in batches (the fast tokenizer runs them in parallel)."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(
                "the tokenizer is not a fast (Rust) tokenizer, so it has no character "
                "offsets; install `tokenizers` and use a model that ships tokenizer.json"
            )
        self.tokenizer = tokenizer

    def __call__(self, rendered: list[RenderedPrompt]) -> list[Segmented]:
        if not rendered:
            return []
        enc = self.tokenizer(
            [r.text for r in rendered],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
        )
        return [
            segment(ids, offs, r)
            for ids, offs, r in zip(enc["input_ids"], enc["offset_mapping"], rendered, strict=True)
        ]
