"""Prompt rendering and prefix/question/suffix segmentation across chat templates."""

from __future__ import annotations

import pytest

from anglecurate.base.errors import UserError
from anglecurate.scoring.prompt import (
    InvalidRow,
    PromptConfig,
    PromptRenderer,
    build_conversation,
    load_prompt_config,
)
from anglecurate.scoring.segments import Segmenter, SkipReason, truncate

QWEN2 = (
    "{%- for message in messages %}{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
TEMPLATES = {"chatml-smollm2": None, "qwen2": QWEN2, "llama3": LLAMA3, "mistral": MISTRAL}
SHOTS_ONLY = PromptConfig(name="shots", shots=(("What is 1+1?", "It is \\boxed{2}."),))
QUESTIONS = [
    "Compute $\\sqrt{49}$.",
    "  Find x if 2x + 3 = 7.\n",
    'def f(x):\n    """Return x squared."""\n',
    "7",
]


def _configs(template_name):
    configs = {
        "default": load_prompt_config("default"),
        "none": load_prompt_config("none"),
        "shots": SHOTS_ONLY,
    }
    if template_name == "mistral":
        del configs["default"]  # no system role in this template (tested below)
    return configs


@pytest.mark.parametrize("template_name", list(TEMPLATES))
@pytest.mark.parametrize("question", QUESTIONS)
def test_segments_cover_the_question_exactly(tokenizer, template_name, question):
    renderer = PromptRenderer(tokenizer, TEMPLATES[template_name])
    segmenter = Segmenter(tokenizer)
    for name, config in _configs(template_name).items():
        messages, q_index = build_conversation(question, config)
        rendered = renderer.render(messages, q_index)
        assert rendered.text[rendered.q_start : rendered.q_end] == question.strip()
        (seg,) = segmenter([rendered])
        ids = seg.input_ids
        q_ids = ids[seg.n_prefix : seg.n_prefix + seg.n_question]
        # Question tokens cover the question; only a token straddling its edge (a merge
        # with a neighbouring character) may carry extra characters.
        assert question.strip() in tokenizer.decode(q_ids), (template_name, name)
        assert tokenizer.decode(q_ids[1:-1]).strip() in question, (template_name, name)
        assert seg.n_prefix + seg.n_question + seg.n_suffix == len(ids)
        assert tokenizer.decode(ids) == rendered.text
        prefix_text = tokenizer.decode(ids[: seg.n_prefix])
        assert rendered.text.startswith(prefix_text)
        assert len(prefix_text) <= rendered.q_start  # no question character in the prefix
        if config.system:
            assert config.system in prefix_text
        for user, assistant in config.shots:
            assert user in prefix_text and assistant in prefix_text
        if template_name != "mistral":  # the others end with a generation prompt
            assert "assistant" in tokenizer.decode(ids[seg.n_prefix + seg.n_question :])


def test_message_rows_keep_their_system_message(tokenizer):
    renderer = PromptRenderer(tokenizer, QWEN2)
    row = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q one"},
        {"role": "assistant", "content": "A one"},
        {"role": "user", "content": "Q two?"},
    ]
    messages, q_index = build_conversation(row, load_prompt_config("default"))
    assert messages == row and q_index == 3
    rendered = renderer.render(messages, q_index)
    assert rendered.text[rendered.q_start : rendered.q_end] == "Q two?"
    assert rendered.text.count("Q one") == 1  # the earlier turn is prefix, not question


def test_message_rows_without_system_get_the_config_context(tokenizer):
    row = [{"role": "user", "content": "How many primes are below 10?"}]
    messages, q_index = build_conversation(row, load_prompt_config("default"))
    assert messages[0]["role"] == "system" and q_index == len(messages) - 1
    messages, q_index = build_conversation(row, load_prompt_config("none"))
    assert messages == row and q_index == 0


def test_template_without_system_role_gives_a_clear_error(tokenizer):
    renderer = PromptRenderer(tokenizer, MISTRAL)
    messages, q_index = build_conversation("2+2?", load_prompt_config("default"))
    with pytest.raises(UserError, match="--prompt-config none"):
        renderer.render(messages, q_index)


def test_template_that_rewrites_content_is_refused(tokenizer):
    upper = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    renderer = PromptRenderer(tokenizer, upper)
    messages, q_index = build_conversation("abc", load_prompt_config("none"))
    with pytest.raises(UserError, match="verbatim"):
        renderer.render(messages, q_index)


def test_model_without_chat_template_is_refused(tokenizer):
    class NoTemplate:
        chat_template = None

    with pytest.raises(UserError, match="--chat-template"):
        PromptRenderer(NoTemplate())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        None,
        3,
        [{"role": "assistant", "content": "x"}],
        [{"role": "user", "content": " "}],
        [{"role": "user"}],
    ],
)
def test_invalid_rows(value):
    with pytest.raises(InvalidRow):
        build_conversation(value, load_prompt_config("default"))


def test_truncation_policies(tokenizer):
    renderer = PromptRenderer(tokenizer)
    messages, q_index = build_conversation("one two three four five six seven", load_prompt_config("none"))
    (seg,) = Segmenter(tokenizer)([renderer.render(messages, q_index)])
    assert truncate(seg, seg.n_tokens, "skip") is seg
    assert truncate(seg, seg.n_tokens - 1, "skip") is SkipReason.TOO_LONG
    cut = truncate(seg, seg.n_prefix + 2, "truncate")
    assert (cut.n_question, cut.n_suffix, cut.truncated) == (2, 0, True)
    assert cut.input_ids == seg.input_ids[: seg.n_prefix + 2]
    assert truncate(seg, seg.n_prefix, "truncate") is SkipReason.PREFIX_TOO_LONG


def test_prompt_config_toml(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('system = "S"\n[[shots]]\nuser = "u"\nassistant = "a"\n')
    config = load_prompt_config(str(path))
    assert config.system == "S" and config.shots == (("u", "a"),)
    path.write_text('sytem = "typo"\n')
    with pytest.raises(UserError, match="unknown keys"):
        load_prompt_config(str(path))
    with pytest.raises(UserError, match="not found"):
        load_prompt_config(str(tmp_path / "missing.toml"))
    default = load_prompt_config("default")
    assert default.system.startswith("A conversation between User and Assistant")
    assert default.shots[0][0] == "What is 2+2?"
