"""Models where users keep them: hub ids from a local Hugging Face cache (offline, laid out
as the hub client lays it out), and base models without a chat template."""

from __future__ import annotations

import json
import shutil

import pytest

from anglecurate.base.errors import UserError
from anglecurate.model.load import has_chat_template, resolve_source

from ..helpers import SHA, hub_model, read_ranked, run_cli


def test_a_cached_hub_id_resolves_offline_to_its_snapshot(offline_cache, tiny_model_dir):
    snap = hub_model(offline_cache, tiny_model_dir)
    source = resolve_source("org/tiny")
    assert source.directory == snap and source.hub_id == "org/tiny" and source.revision == SHA
    assert source.provenance == {"path": str(snap), "hub_id": "org/tiny", "revision": SHA}
    hub_model(offline_cache, tiny_model_dir, sha="0" * 40, ref="v2")
    assert resolve_source("org/tiny", revision="v2").revision == "0" * 40


def test_scoring_a_hub_id_records_the_id_and_revision(
    offline_cache, tiny_model_dir, math_json, tmp_path, monkeypatch, capsys
):
    hub_model(offline_cache, tiny_model_dir)
    out = tmp_path / "out"
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", "org/tiny", "--data", math_json, "--field", "problem",
        "--out", out, "--dtype", "fp32", "--layers", "last",
    )  # fmt: skip
    assert code == 0, err
    model = json.loads((out / "manifest.json").read_text())["run"]["model"]
    assert model["hub_id"] == "org/tiny" and model["revision"] == SHA
    assert read_ranked(out).height == 40


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "org/absent"], "neither a local path nor in the local Hugging Face cache"),
        (["--model", "org/tiny", "--revision", "v9"], "at revision v9 is neither a local path"),
        (["--model", "{local}", "--revision", "v1"], "--revision v1 applies to hub ids"),
    ],
)
def test_hub_id_errors_are_one_line_and_write_nothing(
    offline_cache, tiny_model_dir, math_json, tmp_path, monkeypatch, capsys, args, needle
):
    hub_model(offline_cache, tiny_model_dir)
    args = [a.replace("{local}", str(tiny_model_dir)) for a in args]
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "score", *args, "--data", math_json, "--out", out)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not out.exists()


# -- base models: templates by name ---------------------------------------------------------
@pytest.fixture
def base_model(tiny_model_dir, tmp_path):
    """The tiny model without a chat template, as base checkpoints ship."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    return base


def test_a_model_without_a_template_is_refused_before_loading_naming_both_ways(
    base_model, math_json, tmp_path, monkeypatch, capsys
):
    from anglecurate.scoring import pipeline, spec

    assert not has_chat_template(resolve_source(str(base_model)))

    def no_loading(*args, **kwargs):
        raise AssertionError("the template check must come before anything slow")

    monkeypatch.setattr(pipeline, "open_dataset", no_loading)
    for slow in ("load_tokenizer", "load_config", "load_model"):  # the run spec loads them
        monkeypatch.setattr(spec, slow, no_loading)
    out = tmp_path / "out"
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", base_model, "--data", math_json, "--out", out
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "has no chat template" in lines[0]
    assert "--chat-template plain" in lines[0] and "--chat-template FILE" in lines[0]
    assert not out.exists()


def test_the_plain_template_scores_a_base_model_and_inspect_shows_it(
    base_model, math_json, tmp_path, monkeypatch, capsys
):
    code, out_text, err = run_cli(
        monkeypatch, capsys, "inspect", "--model", base_model, "--data", math_json, "--field", "problem",
        "--chat-template", "plain", "--prompt-config", "none",
    )  # fmt: skip
    assert code == 0, err
    assert "User: " in out_text and "Assistant:" in out_text
    out = tmp_path / "out"
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", base_model, "--data", math_json, "--field", "problem",
        "--out", out, "--chat-template", "plain", "--dtype", "fp32", "--layers", "last",
    )  # fmt: skip
    assert code == 0, err
    run = json.loads((out / "manifest.json").read_text())["run"]
    assert run["tokenizer"]["chat_template"] == "plain"
    assert read_ranked(out)["n_question"].min() > 0


def test_the_packaged_gguf_template_is_found_without_loading_its_tokenizer():
    source = resolve_source("builtin:smollm2")
    assert source.gguf_file and has_chat_template(source)


def test_a_missing_template_file_is_one_line(base_model, tmp_path):
    from anglecurate.scoring.prompt import read_chat_template

    assert "User:" in read_chat_template("plain")
    with pytest.raises(UserError, match="cannot read --chat-template"):
        read_chat_template(str(tmp_path / "nope.jinja"))


def test_an_unreachable_hub_is_one_line_at_once(offline_cache, math_json, tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, but nothing listens there
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    out = tmp_path / "out"
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", "org/tiny", "--data", math_json, "--out", out
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert (
        "neither a local path nor in the local Hugging Face cache, and the hub cannot be reached" in lines[0]
    )
    assert not out.exists()
