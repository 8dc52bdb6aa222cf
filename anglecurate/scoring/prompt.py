"""Prompt construction and rendering: rows become chat conversations, then text with the
question's character span located exactly.

A row's prompt field is either a string (the question text) or a list of ``{role, content}``
messages (verl's layout; the last user message is the question). The prompt config (TOML)
supplies a system prompt and few-shot turns:

- string rows: ``[system] + shots + [user: question.strip()]`` (the authors strip too);
- message rows: kept as they are when they carry their own system message; otherwise the
  configured system prompt and shots are put in front, so both kinds are scored under the
  same context. ``--prompt-config none`` scores message rows exactly as given.

Rendering uses the tokenizer's own chat template. The question is located by rendering the
same conversation with a sentinel in place of the question: the text before and after the
sentinel is the template's context, and the real rendering must equal
``before + question + after``. That holds for any template that inserts content verbatim,
and for templates that ``trim`` content (Llama 3) with the stripped question; any other
template is refused with a clear error rather than mis-segmented.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from anglecurate.base.errors import UserError

# Private-use code points: no template trims, escapes or case-folds them.
SENTINEL = "\ue000anglecurate-question\ue001"

Message = dict[str, str]


@dataclass(frozen=True)
class PromptConfig:
    """System prompt and few-shot (user, assistant) turns placed before every question."""

    name: str
    system: str | None = None
    shots: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def context_messages(self) -> list[Message]:
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for user, assistant in self.shots:
            messages.append({"role": "user", "content": user})
            messages.append({"role": "assistant", "content": assistant})
        return messages

    def to_dict(self) -> dict:
        return {"name": self.name, "system": self.system, "shots": [list(s) for s in self.shots]}

    @classmethod
    def from_dict(cls, data: dict) -> PromptConfig:
        """The inverse of :meth:`to_dict` (a manifest's ``run.prompt``)."""
        return cls(data["name"], data["system"], tuple(tuple(s) for s in data["shots"]))


# `--chat-template plain`: for base models without a template of their own. The system
# text and a blank line, then one "User:"/"Assistant:" line per turn, and "Assistant:" to
# answer after. No whitespace control (`{%-`) anywhere: it would eat the newline that ends
# the line before the tag.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
BUILTIN_TEMPLATES = {"plain": PLAIN_TEMPLATE}
# Earlier texts of a built-in, which folders scored with them recorded by hash: a later
# command on such a folder renders with the text it was scored with. `plain` as first
# written ran the turns together ("SYSUser: Q1Assistant: A1User: Q2Assistant:").
RETIRED_TEMPLATES = {
    "plain": (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{{ message['content'] }}\n\n"
        "{%- elif message['role'] == 'user' -%}User: {{ message['content'] }}\n"
        "{%- elif message['role'] == 'assistant' -%}Assistant: {{ message['content'] }}\n"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}Assistant:{%- endif -%}",
    )
}


def template_hash(text: str) -> str:
    """What a run records of its chat template (sha256, 16 hex digits)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_chat_template(path: str | None, recorded_hash: str | None = None) -> str | None:
    """A ``--chat-template``: a built-in name (``plain``) or a Jinja file's text (None: the
    tokenizer's own template). ``recorded_hash``: a run's record of the template it was
    scored with; a built-in then reads as the version with that hash (an older folder keeps
    the text it was scored with), the current one when none matches."""
    if path is None:
        return None
    if path in BUILTIN_TEMPLATES and not Path(path).is_file():
        for text in (BUILTIN_TEMPLATES[path], *RETIRED_TEMPLATES.get(path, ())):
            if recorded_hash is None or template_hash(text) == recorded_hash:
                return text
        return BUILTIN_TEMPLATES[path]
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read --chat-template {path}: {exc}") from exc


def load_prompt_config(spec: str) -> PromptConfig:
    """``default`` (the paper's R1 prompt), ``none`` (no system, no shots) or a TOML path.

    TOML keys: ``system`` (string, optional) and ``[[shots]]`` tables with ``user`` and
    ``assistant`` strings.
    """
    if spec == "none":
        return PromptConfig(name="none")
    if spec == "default":
        text = resources.files("anglecurate.scoring").joinpath("prompts/r1.toml").read_text()
        return _parse_prompt_toml(text, name="default")
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"prompt config {spec!r} not found; pass 'default', 'none' or a TOML file path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read prompt config {spec}: {exc}") from exc
    return _parse_prompt_toml(text, name=str(path.resolve()))


def _parse_prompt_toml(text: str, name: str) -> PromptConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"prompt config {name} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"system", "shots"}
    if unknown:
        raise UserError(f"prompt config {name} has unknown keys {sorted(unknown)}; allowed: system, shots")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise UserError(f"prompt config {name}: 'system' must be a string")
    shots = []
    for i, shot in enumerate(data.get("shots", [])):
        if not (
            isinstance(shot, dict)
            and isinstance(shot.get("user"), str)
            and isinstance(shot.get("assistant"), str)
        ):
            raise UserError(f"prompt config {name}: shots[{i}] needs string 'user' and 'assistant' keys")
        shots.append((shot["user"], shot["assistant"]))
    return PromptConfig(name=name, system=system or None, shots=tuple(shots))


class InvalidRow(ValueError):
    """A row whose prompt field cannot be scored (empty, wrong shape); message says why."""


def build_conversation(value: object, config: PromptConfig) -> tuple[list[Message], int]:
    """Turn a row's prompt field into (messages, index of the question message)."""
    if isinstance(value, str):
        question = value.strip()
        if not question:
            raise InvalidRow("empty question")
        messages = [*config.context_messages(), {"role": "user", "content": question}]
        return messages, len(messages) - 1
    if isinstance(value, (list, tuple)):
        messages = []
        for m in value:
            if not (
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            ):
                raise InvalidRow("messages must be {role, content} objects with string values")
            messages.append({"role": m["role"], "content": m["content"]})
        user_turns = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not user_turns:
            raise InvalidRow("conversation has no user message")
        if not messages[user_turns[-1]]["content"].strip():
            raise InvalidRow("empty question")
        if any(m["role"] == "system" for m in messages):
            return messages, user_turns[-1]
        context = config.context_messages()
        return [*context, *messages], len(context) + user_turns[-1]
    if value is None:
        raise InvalidRow("prompt is null")
    raise InvalidRow(f"prompt has type {type(value).__name__}; expected a string or messages")


@dataclass(frozen=True)
class RenderedPrompt:
    """Chat-template text and the character span [q_start, q_end) of the question in it."""

    text: str
    q_start: int
    q_end: int


class PromptRenderer:
    """Renders conversations with a tokenizer's chat template and locates the question."""

    def __init__(self, tokenizer, chat_template: str | None = None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        if not self.chat_template:
            raise UserError(
                "the tokenizer has no chat template; pass --chat-template plain (system text, "
                "then User:/Assistant: turns) or --chat-template FILE (a Jinja template)"
            )
        self._context_cache: dict[str, tuple[str, str]] = {}

    @property
    def template_hash(self) -> str:
        return template_hash(self.chat_template)

    def _apply(self, messages: list[Message]) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.chat_template,
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as exc:  # jinja raises TemplateError and plain exceptions alike
            roles = [m["role"] for m in messages]
            raise UserError(
                f"the chat template rejected a conversation with roles {roles}: {exc}; "
                "if it has no system role, use --prompt-config none or a config without "
                "'system'"
            ) from exc

    def _context(self, messages: list[Message], q_index: int) -> tuple[str, str]:
        probe = [dict(m) for m in messages]
        probe[q_index]["content"] = SENTINEL
        key = json.dumps(probe)
        if key not in self._context_cache:
            rendered = self._apply(probe)
            if rendered.count(SENTINEL) != 1:
                raise UserError(
                    "the chat template does not insert the question text verbatim exactly "
                    "once; anglecurate cannot locate the question with it"
                )
            before, after = rendered.split(SENTINEL)
            if len(self._context_cache) > 256:  # bounded: message rows may all differ
                self._context_cache.clear()
            self._context_cache[key] = (before, after)
        return self._context_cache[key]

    def render(self, messages: list[Message], q_index: int) -> RenderedPrompt:
        before, after = self._context(messages, q_index)
        text = self._apply(messages)
        question = messages[q_index]["content"]
        for candidate in (question, question.strip()):
            if text == before + candidate + after:
                return RenderedPrompt(text, len(before), len(before) + len(candidate))
        raise UserError(
            "the chat template changes the question text when rendering it, so its tokens "
            "cannot be located; pass --chat-template with a template that inserts content "
            "verbatim"
        )
