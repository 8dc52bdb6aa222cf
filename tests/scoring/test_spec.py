"""The run spec: what `score` resolves is recorded, and every later command rebuilds the same
run from the manifest (validate, the pilot, Ray actors), loading options included."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from anglecurate.base.errors import UserError
from anglecurate.evidence.validate import ValidateConfig, run_validation
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import score
from anglecurate.scoring.spec import RunSpec

# A model whose config and modeling classes live in the checkpoint folder (auto_map), as
# on the hub for models transformers does not ship: loading it needs trust_remote_code.
CONFIGURATION = """
from transformers import LlamaConfig


class RemoteConfig(LlamaConfig):
    model_type = "remote_llama"
"""
MODELING = """
from transformers import LlamaForCausalLM, LlamaModel

from .configuration_remote import RemoteConfig


class RemoteModel(LlamaModel):
    config_class = RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig
"""


@pytest.fixture(scope="module")
def remote_model(tiny_model_dir, tmp_path_factory):
    """The tiny Llama's weights behind custom (remote) config and model classes."""
    import shutil

    folder = tmp_path_factory.mktemp("remote")
    for path in tiny_model_dir.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "configuration_remote.py").write_text(CONFIGURATION)
    (folder / "modeling_remote.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "remote_llama"
    config["architectures"] = ["RemoteForCausalLM"]
    config["auto_map"] = {
        "AutoConfig": "configuration_remote.RemoteConfig",
        "AutoModel": "modeling_remote.RemoteModel",
        "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "q.jsonl"
    rows = [
        {"question": f"What is {i} plus {i}?" + " Explain." * (i % 4), "answer": str(2 * i)}
        for i in range(16)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_a_remote_code_model_is_scored_validated_and_rebuilt_with_its_code(remote_model, questions, tmp_path):
    base = dict(model=str(remote_model), data=str(questions), field="question", dtype="fp32")
    with pytest.raises(UserError, match="cannot read the model config"):
        score(ScoreConfig(**base, out=str(tmp_path / "refused")))  # not trusted: refused in one line
    out = tmp_path / "out"
    result = score(ScoreConfig(**base, out=str(out), trust_remote_code=True))
    assert result.manifest["run"]["model"]["trust_remote_code"] is True

    spec = RunSpec.from_run(result.manifest["run"], out)
    assert spec.trust_remote_code and type(spec.config).__name__ == "RemoteConfig"
    run_validation(ValidateConfig(ranking=str(out), sample=8, bootstrap=50, permutations=50))
    measured = pl.read_parquet(out / "validate.parquet")
    assert measured.height == 8 and (measured["grad_norm"] > 0).all()  # backward passes on that model


def test_the_attention_kernel_is_recorded_and_reused(tiny_model_dir, questions, tmp_path):
    cfg = ScoreConfig(
        model=str(tiny_model_dir),
        data=str(questions),
        field="question",
        out=str(tmp_path / "out"),
        dtype="fp32",
        attn_implementation="eager",
    )
    result = score(cfg)
    run = result.manifest["run"]
    assert run["model"]["attn_implementation"] == "eager"
    spec = RunSpec.from_run(run, cfg.out)
    model = spec.load_model(torch.float32, torch.device("cpu"), causal_lm=True)
    assert model.attn_implementation == "eager"
    # The default kernel records nothing, so folders scored before it was kept still resume.
    default = score(
        ScoreConfig(**{**cfg.__dict__, "out": str(tmp_path / "auto"), "attn_implementation": "auto"})
    )
    assert "attn_implementation" not in default.manifest["run"]["model"]
    assert "trust_remote_code" not in default.manifest["run"]["model"]


def test_from_run_refuses_another_model_and_another_template(tiny_model_dir, ranking, tmp_path):
    manifest = json.loads((ranking / "manifest.json").read_text())
    run = manifest["run"]
    changed = {**run, "model": {**run["model"], "config_hash": "0" * 16}}
    with pytest.raises(UserError, match="is not the one that scored"):
        RunSpec.from_run(changed, ranking)
    with pytest.raises(UserError, match="another chat template"):
        RunSpec.from_run(run, ranking, chat_template="plain")
    spec = RunSpec.from_run(run, ranking)
    assert spec.prompt.to_dict() == run["prompt"] and spec.max_length == run["max_length"]
    assert spec.model_record()["config_hash"] == run["model"]["config_hash"]


CONVERSATION = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
]


def test_the_plain_template_renders_one_line_per_turn(tokenizer):
    from anglecurate.scoring.prompt import PromptRenderer, read_chat_template

    renderer = PromptRenderer(tokenizer, read_chat_template("plain"))
    rendered = renderer.render(CONVERSATION, 3)
    assert rendered.text == "SYS\n\nUser: Q1\nAssistant: A1\nUser: Q2\nAssistant:"
    assert rendered.text[rendered.q_start : rendered.q_end] == "Q2"
    answered = tokenizer.apply_chat_template(
        [*CONVERSATION, {"role": "assistant", "content": "A2"}],
        chat_template=renderer.chat_template,
        tokenize=False,
    )
    assert answered == "SYS\n\nUser: Q1\nAssistant: A1\nUser: Q2\nAssistant: A2\n"


def test_a_folder_scored_with_the_earlier_plain_template_is_rebuilt_with_it(ranking):
    """Folders recorded the template by hash: one scored before the plain template kept its
    newlines is rebuilt (validate, the pilot) with the text it was scored with."""
    from anglecurate.scoring.prompt import RETIRED_TEMPLATES, template_hash

    run = json.loads((ranking / "manifest.json").read_text())["run"]
    old = RETIRED_TEMPLATES["plain"][0]
    run = {**run, "tokenizer": {"chat_template_hash": template_hash(old), "chat_template": "plain"}}
    spec = RunSpec.from_run(run, ranking)
    assert spec.renderer.chat_template == old
    assert spec.render("Q1")[1].text.endswith("\\boxed{4}User: Q1Assistant:")  # run together, as scored
    assert spec.tokenizer_record() == run["tokenizer"]  # the run is recorded as it was


def test_rescoring_with_another_template_names_the_chat_template(
    tiny_model_dir, ranking, tmp_path, monkeypatch, capsys
):
    import shutil

    from ..helpers import run_cli

    copy = tmp_path / "out"
    shutil.copytree(ranking, copy)
    args = ["score", "--model", tiny_model_dir, "--data", ranking.parent / "q.jsonl", "--out", copy]
    args += ["--id-field", "id", "--field", "question", "--dtype", "fp32", "--chat-template", "plain"]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{copy} holds a run with different chat template; pass --overwrite" in err
