"""The resolved run: how a row becomes the tokens a model sees, in one object.

`score` builds a :class:`RunSpec` from its options; every later command that needs the
model again (validate's backward passes, the pilot's trainer, a Ray actor) rebuilds it
from the finished run's manifest with :meth:`RunSpec.from_run`, never by hand. So the
model source, ``trust_remote_code``, the attention kernel, the chat template, the prompt
config (system text, worked examples) and the truncation rule are the ones that scored.

What the run record holds of it (``manifest.run``):

- ``model``: the source (``path``, and ``hub_id`` / ``revision`` for a hub model),
  ``config_hash``; ``trust_remote_code`` and ``attn_implementation`` when not the default
  (so runs recorded before they were kept still resume);
- ``tokenizer``: the template's hash, and a built-in template's name (``plain``);
- ``prompt``: the prompt config;
- ``max_length``, ``on_long``: the truncation rule; ``dataset.field``: the prompt column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from anglecurate.base.errors import UserError
from anglecurate.model.layers import LoadedModel
from anglecurate.model.load import (
    ModelSource,
    config_hash,
    has_chat_template,
    load_config,
    load_model,
    load_tokenizer,
    resolve_source,
)
from anglecurate.scoring.prompt import (
    BUILTIN_TEMPLATES,
    Message,
    PromptConfig,
    PromptRenderer,
    RenderedPrompt,
    build_conversation,
    load_prompt_config,
    read_chat_template,
)
from anglecurate.scoring.segments import Segmented, Segmenter, SkipReason, truncate

NO_TEMPLATE = (
    "{model} has no chat template; pass --chat-template plain (system text, then "
    "User:/Assistant: turns) or --chat-template FILE (a Jinja template)"
)


@dataclass
class RunSpec:
    """A model and the rendering of its prompts, resolved and checked.

    ``config`` is the transformers config and ``tokenizer`` the loaded tokenizer; the model
    weights load only on :meth:`load_model`.
    """

    source: ModelSource
    config: object
    tokenizer: object
    renderer: PromptRenderer | None  # None: a model without a chat template (template_required=False)
    prompt: PromptConfig
    max_length: int
    on_long: str
    trust_remote_code: bool = False
    attn_implementation: str = "auto"
    chat_template: str | None = None  # the --chat-template given: a built-in name or a file

    @classmethod
    def from_options(
        cls,
        model: str,
        revision: str | None = None,
        chat_template: str | None = None,
        prompt_config: str = "default",
        trust_remote_code: bool = False,
        attn_implementation: str = "auto",
        max_length: int = 4096,
        on_long: str = "skip",
        source: ModelSource | None = None,
        template_required: bool = True,
    ) -> RunSpec:
        """From `score`'s options (``source``: from :func:`preflight`, when the caller ran it
        before its own quick checks). ``template_required`` False: a model without a chat
        template is taken as it is (``renderer`` None; the pilot trains such a model on the
        plain question text)."""
        template = read_chat_template(chat_template)
        if source is None:
            source = preflight(model, revision, chat_template) if template_required else resolve_source(model)
        prompt = load_prompt_config(prompt_config)
        config = load_config(source, trust_remote_code)
        tokenizer = load_tokenizer(source, trust_remote_code)
        return cls(
            source=source,
            config=config,
            tokenizer=tokenizer,
            renderer=(
                PromptRenderer(tokenizer, template)
                if template_required or template is not None or has_chat_template(source)
                else None
            ),
            prompt=prompt,
            max_length=max_length,
            on_long=on_long,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
            chat_template=chat_template,
        )

    @classmethod
    def from_run(cls, run: dict, folder: str | Path, chat_template: str | None = None) -> RunSpec:
        """From a run record (``manifest["run"]`` of ``folder``): the same model, checked by
        its config hash, and the same template, checked by its hash. ``chat_template``
        overrides the recorded one (a template file scored with lives outside the run)."""
        model = run["model"]
        trust = bool(model.get("trust_remote_code", False))
        source = _recorded_source(model)
        config = load_config(source, trust)
        if config_hash(config) != model["config_hash"]:
            raise UserError(
                f"the model at {source.path} is not the one that scored {folder} (its config "
                "differs); point at that model"
            )
        tokenizer = load_tokenizer(source, trust)
        template_spec = chat_template or run["tokenizer"].get("chat_template")  # a built-in, by name
        recorded = run["tokenizer"]["chat_template_hash"]  # a built-in: the version it was scored with
        renderer = PromptRenderer(tokenizer, read_chat_template(template_spec, recorded))
        if renderer.template_hash != recorded:
            raise UserError(
                f"{folder} was scored with another chat template; pass the same one with --chat-template"
            )
        return cls(
            source=source,
            config=config,
            tokenizer=tokenizer,
            renderer=renderer,
            prompt=PromptConfig.from_dict(run["prompt"]),
            max_length=run["max_length"],
            on_long=run["on_long"],
            trust_remote_code=trust,
            attn_implementation=model.get("attn_implementation", "auto"),
            chat_template=template_spec,
        )

    # -- what the run records --------------------------------------------------------------
    def model_record(self) -> dict:
        """The spec's part of ``run["model"]`` (the caller adds layers, dtype and hashes)."""
        record = {**self.source.provenance, "config_hash": config_hash(self.config)}
        if self.trust_remote_code:
            record["trust_remote_code"] = True
        if self.attn_implementation != "auto":
            record["attn_implementation"] = self.attn_implementation
        return record

    def tokenizer_record(self) -> dict:
        named = self.chat_template in BUILTIN_TEMPLATES
        return {
            "chat_template_hash": self.renderer.template_hash,
            # a built-in template by name, so a later command can take the same one unasked
            **({"chat_template": self.chat_template} if named else {}),
        }

    # -- rows to tokens ----------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def segmenter(self) -> Segmenter:
        return Segmenter(self.tokenizer)

    def conversation(self, value: object) -> tuple[list[Message], int]:
        """A row's prompt value as the conversation scored: the prompt config's context,
        then the question (``InvalidRow`` for a value that is no question)."""
        return build_conversation(value, self.prompt)

    def render(self, value: object) -> tuple[list[Message], RenderedPrompt]:
        messages, q_index = self.conversation(value)
        return messages, self.renderer.render(messages, q_index)

    def segment(self, value: object, segmenter: Segmenter | None = None) -> Segmented | SkipReason:
        """One row's tokens as scored, truncated (or skipped) by the run's rule."""
        _, rendered = self.render(value)
        (seg,) = (segmenter or self.segmenter())([rendered])
        return truncate(seg, self.max_length, self.on_long)

    # -- the model ---------------------------------------------------------------------------
    def load_model(self, dtype: torch.dtype, device: torch.device, causal_lm: bool = False) -> LoadedModel:
        return load_model(
            self.source,
            self.config,
            dtype,
            device,
            self.trust_remote_code,
            self.attn_implementation,
            causal_lm=causal_lm,
        )

    def load_on(self, device: str = "auto", dtype: str = "auto", causal_lm: bool = False) -> LoadedModel:
        """The model on ``device`` in ``dtype`` as the command line names them (``auto``: a
        CUDA device when there is one; the checkpoint's dtype, fp32 for fp16 on CPU). How the
        commands that need a finished run's model again (validate's backward passes,
        calibrate's rollouts) load it; the device and dtype it got are the result's."""
        from anglecurate.model.load import resolve_device, resolve_dtype

        target = resolve_device(device)
        return self.load_model(resolve_dtype(dtype, self.config, target), target, causal_lm=causal_lm)


def preflight(model: str, revision: str | None, chat_template: str | None) -> ModelSource:
    """The model source, and the checks that need no loading: the template file reads, and a
    model without a chat template of its own was given one. Runs before anything slow."""
    template = read_chat_template(chat_template)
    source = resolve_source(model, revision)
    if template is None and not has_chat_template(source):
        raise UserError(NO_TEMPLATE.format(model=model))
    return source


def _recorded_source(model: dict) -> ModelSource:
    """The recorded model: its path when it is still there, else its hub id at the recorded
    commit (a hub snapshot folder moved or pruned from the cache)."""
    path = model["path"]
    if Path(path).exists() or not model.get("hub_id"):
        return resolve_source(path)
    return resolve_source(model["hub_id"], model.get("revision"))
