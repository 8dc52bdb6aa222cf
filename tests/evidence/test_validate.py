"""`anglecurate validate`: the gradient identity, real backward passes, the evidence and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from anglecurate.evidence import analysis, gradients
from anglecurate.evidence.validate import ValidateConfig, run_validation
from anglecurate.model.load import load_config, load_model, resolve_source
from anglecurate.rewards.answers import last_boxed
from anglecurate.rewards.registry import completion_text

from ..helpers import run_cli


def _lm(model_dir, dtype=torch.float32):
    source = resolve_source(str(model_dir))
    return load_model(source, load_config(source), dtype, torch.device("cpu"), causal_lm=True)


def _projections(model):
    probe = torch.tensor([[0, 1]])
    return gradients.mlp_input_projections(model.mlps, lambda: model.base(input_ids=probe, use_cache=False))


def test_gradient_identity_of_a_linear_layer(tiny_model_dir):
    """||dL/dW||_F^2 = sum_ij <x_i, x_j> <g_i, g_j> for y_i = W x_i (the paper's identity)."""
    model = _lm(tiny_model_dir, torch.float64)
    projections = _projections(model)
    names = [[n for n, m in model.mlps[k].named_modules() if m in mods] for k, mods in enumerate(projections)]
    assert names == [["gate_proj", "up_proj"]] * 3  # found by what reads the MLP input, not by name
    up = projections[1][1]
    seen = {}
    up.register_forward_pre_hook(lambda _m, a: seen.__setitem__("x", a[0][0]))
    up.register_full_backward_hook(lambda _m, _gi, go: seen.__setitem__("g", go[0][0]))
    ids = torch.randint(0, 300, (1, 23), generator=torch.Generator().manual_seed(0))
    loss = model.base(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    x, g = seen["x"], seen["g"]  # [T, d_in], [T, d_out]
    identity = ((x @ x.T) * (g @ g.T)).sum()
    assert float(up.weight.grad.square().sum()) == pytest.approx(float(identity.detach()), rel=1e-10)


def test_answer_target_is_a_real_backward_pass(tiny_model_dir, tokenizer):
    model = _lm(tiny_model_dir)
    projections = _projections(model)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    example = gradients.answer_example(
        tokenizer, tokenizer.chat_template, messages, prompt_text, prompt_ids, "4"
    )
    answer = tokenizer.decode(example.input_ids[example.answer_start :])
    assert answer.startswith("4") and "<|im_end|>" in answer  # the assistant turn, closed
    result = gradients.answer_target(model.base, example, projections)
    # independently: the labels API of transformers, loss on the answer tokens only
    labels = example.input_ids.clone()
    labels[: example.answer_start] = -100
    model.base.zero_grad()
    loss = model.base(input_ids=example.input_ids[None], labels=labels[None], use_cache=False).loss
    loss.backward()
    norm = torch.sqrt(
        sum(p.grad.double().square().sum() for p in model.base.parameters() if p.grad is not None)
    )
    assert result["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert result["grad_norm"] == pytest.approx(float(norm), rel=1e-4)
    up = model.mlps[2].up_proj.weight.grad.double().square().sum()
    gate = model.mlps[2].gate_proj.weight.grad.double().square().sum()
    assert result["grad_mlp_in_layers"][2] == pytest.approx(float(torch.sqrt(up + gate)), rel=1e-4)


def test_last_boxed():
    assert last_boxed(r"so \boxed{1} then \boxed{\frac{a}{b}}.") == r"\frac{a}{b}"
    assert last_boxed(r"\boxed{unclosed") is None and last_boxed("none") is None


def odd_length(completions, answer, **kwargs) -> list[float]:
    """A reward with variance on a random model (TRL's signature): the tests' plug-in."""
    return [float(len(completion_text(c)) % 2) for c in completions]


def test_split_recommends_only_what_holds():
    rng = np.random.default_rng(0)
    n, layers = 240, [0, 1, 2]
    target = rng.normal(size=n)
    intra, inter = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    inter[:, 2] = -target + 0.8 * rng.normal(size=n)  # lower c_inter at layer 2: larger target
    features = analysis.layer_features(intra, inter, layers, 1.0, 1.0)
    choose = np.arange(n) % 2 == 0
    split = analysis.split_check(features, target, choose, 0, 300)
    assert split["chosen_feature"] == "c_inter@2" and split["sign"] == -1.0 and split["holds"]
    assert split["hold_out_rho"] > 0.5 and split["hold_out_ci"][0] > 0
    choice, why = analysis.recommend(split, 1.0, 1.0, "grad_norm")
    assert choice == {"metric": "angles", "layer": 2, "w_intra": 0.0, "w_inter": -1.0} and "holds" in why
    noise = analysis.layer_features(rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), layers, 1.0, 1.0)
    split = analysis.split_check(noise, target, choose, 0, 300)
    choice, why = analysis.recommend(split, 1.0, 1.0, "grad_norm")
    assert choice is None and not split["holds"] and "includes 0" in why


def test_validate_end_to_end(ranking, monkeypatch, capsys):
    report = run_validation(ValidateConfig(ranking=str(ranking), sample=24, bootstrap=200, permutations=200))
    frame = pl.read_parquet(ranking / "validate.parquet")
    assert frame.height == 24 and frame["half"].value_counts()["count"].to_list() == [12, 12]
    assert frame["uid"].n_unique() == 24 and (frame["grad_norm"] > 0).all() and (frame["loss"] > 0).all()
    ranks = sorted(frame["rank"].to_list())
    assert ranks[0] < 2 and ranks[-1] >= 38  # strata span the whole ranking of 40
    saved = json.loads((ranking / "validate.json").read_text())
    assert saved == json.loads(json.dumps(report))
    names = {r["feature"] for r in report["correlations"]}
    assert names == {"score", "score_length_controlled"} | {
        f"{c}@{layer}" for c in ("c_intra", "c_inter", "combined") for layer in (0, 1, 2)
    }
    assert report["answer_field"] == "answer" and report["difficulty_field"] is None
    for r in report["correlations"]:
        assert -1 <= r["rho"] <= 1 and r["ci_low"] <= r["rho"] <= r["ci_high"] and r["p"] <= r["p_fwer"] <= 1
        assert r["controls"] == ["n_question", "loss"]
    assert {c["covariate"] for c in report["confounds"]} == {"n_question", "loss"}
    assert (report["recommendation"] is not None) == report["split"]["holds"]
    assert len(report["layerwise_mlp_in"]) == 3

    # a rerun resumes from the cache: no backward pass, the same numbers
    def no_backward(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(gradients, "answer_target", no_backward)
    again = run_validation(ValidateConfig(ranking=str(ranking), sample=24, bootstrap=200, permutations=200))
    assert again["correlations"] == report["correlations"]
    monkeypatch.undo()

    code, out, err = run_cli(
        monkeypatch, capsys, "validate", "--ranking", ranking, "--sample", "24", "--bootstrap", "100"
    )
    assert code == 0 and "is the score a proxy?" in out and "choose / hold-out" in out
    cases = [
        (["--answer-field", "solution"], "--answer-field 'solution' is not a column"),
        (["--rl-samples", "1"], "--rl-samples must be 0"),
        (["--target", "rl_grad_norm"], "needs --rl-samples"),
        (["--sample", "4"], "--sample must be at least 8"),
    ]
    for args, message in cases:
        code, _, err = run_cli(monkeypatch, capsys, "validate", "--ranking", ranking, *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_a_sample_larger_than_the_ranking_says_it_measures_all_rows(ranking, tmp_path, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(ranking, copy)
    rng = np.random.default_rng(0)  # made-up targets: this test is about the sample, not backward passes

    def made_up(lm, example, projections):
        return {"loss": float(rng.uniform(1, 2)), "grad_norm": float(rng.uniform(1, 2)),
                "grad_mlp_in_layers": rng.uniform(0, 1, 3).tolist()}  # fmt: skip

    monkeypatch.setattr(gradients, "answer_target", made_up)
    args = [
        "validate",
        "--ranking",
        copy,
        "--sample",
        "240",
        "--bootstrap",
        "20",
        "--permutations",
        "20",
        "-q",
    ]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (
        err.splitlines()[0]
        == f"warning: --sample 240 is more than the 40 ranked rows of {copy}; measuring all 40"
    )
    assert json.loads((copy / "validate.json").read_text())["sample"] == {
        "n": 40,
        "asked": 240,
        "seed": 0,
        "of": 40,
    }


def test_rl_target_reports_zero_variance_groups(ranking):
    cfg = ValidateConfig(
        ranking=str(ranking),
        sample=8,
        rl_samples=3,
        max_new_tokens=3,
        reward="tests.evidence.test_validate:odd_length",
        target="rl_grad_norm",
        bootstrap=50,
        permutations=50,
    )
    report = run_validation(cfg)
    frame = pl.read_parquet(ranking / "validate.parquet")
    assert report["primary_target"] == "rl_grad_norm" and report["rl"]["samples"] == 3
    zero = frame["zero_variance"]
    assert report["rl"]["zero_variance_groups"] == zero.sum()
    assert (frame.filter(zero)["rl_grad_norm"] == 0).all()
    assert (frame.filter(~zero)["rl_grad_norm"] > 0).all()
    assert sum(report["rl"]["pass_rate_histogram"].values()) == 8


def test_validate_takes_the_number_reward(ranking, monkeypatch, capsys):
    """`validate --reward number`: the reward of the pilot, resolved by the one registry."""
    code, out, err = run_cli(
        monkeypatch, capsys, "validate", "--ranking", ranking, "--sample", "8", "--seed", "3",
        "--rl-samples", "2", "--reward", "number", "--max-new-tokens", "2",
        "--bootstrap", "20", "--permutations", "20", "--json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["options"]["reward"] == "number" and report["rl"]["samples"] == 2
    assert sum(report["rl"]["pass_rate_histogram"].values()) == 8
    code, _, err = run_cli(monkeypatch, capsys, "validate", "--ranking", ranking, "--rl-samples", "2",
                           "--reward", "exact")  # fmt: skip
    assert code == 2 and "unknown --reward 'exact'" in err and err.count("\n") == 1


def _tiny_rl(tiny_model_dir, tokenizer):
    model = _lm(tiny_model_dir)
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return model, messages, ids


def test_rl_target_leaves_the_global_generator_alone(tiny_model_dir, tokenizer):
    model, messages, ids = _tiny_rl(tiny_model_dir, tokenizer)
    projections = _projections(model)
    seen = []

    def recording(completions, answer, **kwargs):
        seen.append([completion_text(c) for c in completions])
        return odd_length(completions, answer)

    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    for _ in range(2):
        gradients.rl_target(model.base, tokenizer, ids, "4", projections, recording, 4, 6, 7, prompt=messages)
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched
    assert seen[0] == seen[1] and len(set(seen[0])) > 1  # the same seed: the same samples
    gradients.rl_target(model.base, tokenizer, ids, "4", projections, recording, 4, 6, 8, prompt=messages)
    assert seen[2] != seen[0]


def test_answer_fallback_is_said(ranking, monkeypatch, capsys, tokenizer):
    """A chat template that rejects an assistant turn: answer + eos, with a warning and a record."""
    from jinja2 import TemplateError

    owner = next(c for c in type(tokenizer).__mro__ if "apply_chat_template" in vars(c))
    original = owner.apply_chat_template

    def rejecting(self, conversation, *args, **kwargs):
        if conversation and conversation[-1]["role"] == "assistant":
            raise TemplateError("this template has no assistant turns")
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(owner, "apply_chat_template", rejecting)
    report = run_validation(
        ValidateConfig(ranking=str(ranking), sample=8, seed=11, bootstrap=20, permutations=20)
    )
    err = capsys.readouterr().err
    assert report["answer_target"] == gradients.REJECTED_TARGET
    assert json.loads((ranking / "validate.json").read_text())["answer_target"] == gradients.REJECTED_TARGET
    assert err.count("warning:") == 1 and "rejected an assistant turn" in err and "8 of 8" in err
    monkeypatch.undo()
    report = run_validation(
        ValidateConfig(ranking=str(ranking), sample=8, seed=12, bootstrap=20, permutations=20)
    )
    assert report["answer_target"] == gradients.TEMPLATE_TARGET and "warning" not in capsys.readouterr().err
