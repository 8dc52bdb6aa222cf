"""`anglecurate pilot` end to end on the tiny random model: every output file, a resume
after a kill that redoes nothing finished, the report's pilot section, and the errors."""

from __future__ import annotations

import json

import polars as pl
import pytest

pytest.importorskip("trl")

from anglecurate.piloting import record as pilot_record  # noqa: E402

from ..helpers import greedy_by_hand, run_cli  # noqa: E402


def pilot_args(model, data, out, *extra):
    return [
        "pilot", "--model", str(model), "--data", str(data), "--out", str(out),
        "--field", "problem", "--answer-field", "answer", "--id-field", "id",
        "--seeds", "1", "--steps", "2", "--eval-every", "1", "--eval-rows", "4",
        "--num-generations", "2", "--prompts-per-step", "2", "--max-completion-length", "3",
        "--learning-rate", "1e-4", *extra,
    ]  # fmt: skip


class Killed(KeyboardInterrupt):
    pass


def test_pilot_writes_every_output_and_resumes_after_a_kill(
    monkeypatch, capsys, tiny_model_dir, data, tmp_path
):
    out = tmp_path / "p"
    record = pilot_record.Recorder.record

    def dies_at_step_two_of_gainrl(self, model, step):
        if self.arm == "gainrl" and step == 2:
            raise Killed
        return record(self, model, step)

    monkeypatch.setattr(pilot_record.Recorder, "record", dies_at_step_two_of_gainrl)
    code, _, err = run_cli(
        monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, "--arms", "uniform,gainrl")
    )
    assert code == 130, err
    assert err.strip().endswith("of each run are kept; rerun the same command to resume"), err
    uniform = out / "runs" / "uniform-seed0"
    gainrl = out / "runs" / "gainrl-seed0"
    assert (uniform / "done.json").is_file() and not (uniform / "checkpoints").exists()
    assert not (gainrl / "done.json").exists()
    assert (gainrl / "checkpoints" / "checkpoint-1").is_dir()
    before = pl.read_parquet(gainrl / "curve.parquet")
    assert before["step"].to_list() == [0, 1]
    uniform_curve = pl.read_parquet(uniform / "curve.parquet")

    monkeypatch.setattr(pilot_record.Recorder, "record", record)
    code, stdout, err = run_cli(
        monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, "--arms", "uniform,gainrl", "--json")
    )
    assert code == 0, err
    summary = json.loads(stdout)
    after = pl.read_parquet(gainrl / "curve.parquet")
    assert after["step"].to_list() == [0, 1, 2]
    assert after.head(2).equals(before)  # kept, not recomputed
    assert pl.read_parquet(uniform / "curve.parquet").equals(uniform_curve)  # a finished run is not redone

    curves = pl.read_parquet(out / "pilot.parquet")
    assert curves.columns == list(pilot_record.CURVE_SCHEMA)
    assert curves.select("arm", "seed").unique().height == 2
    assert curves.filter(pl.col("arm") == "uniform")["centre"].null_count() == 3
    ordered = curves.filter(pl.col("arm") == "gainrl").sort("step")
    assert ordered["tokens"].is_sorted() and ordered["tokens"][-1] > 0
    assert ordered["epoch"].to_list() == [0, 0, 1]  # per-epoch 2 prompts: one step each
    assert ordered["fed_angle"][-1] is not None and 0.0 < ordered["fed_angle"][-1] < 1.0
    assert ((curves["accuracy"] >= 0) & (curves["accuracy"] <= 1)).all()

    assert summary == json.loads((out / "pilot.json").read_text())
    assert summary["runs_finished"] == 2 and summary["baseline"] == "uniform"
    entry = summary["arms"]["gainrl"]
    for key in (
        "final_accuracy",
        "best_accuracy",
        "auc",
        "steps_to_target",
        "speedup_steps",
        "speedup_tokens_ci95",
    ):
        assert key in entry
    assert summary["verdict"] and all(isinstance(line, str) for line in summary["verdict"])
    cost = summary["cost"]
    last = curves.sort("step").group_by("arm", "seed").last()
    assert cost["runs"] == 2 and set(cost["arms"]) == {"uniform", "gainrl"}
    assert cost["generated_tokens"] == last["tokens"].sum() + last["eval_tokens"].sum() > 0
    assert cost["wall_seconds"] == pytest.approx(last["seconds"].sum() + last["eval_seconds"].sum(), abs=0.2)
    assert cost["arms"]["uniform"]["in_uniform_runs"]["wall_seconds"] == 1.0
    assert summary["training"]["micro_batch"] * summary["training"]["accumulation_steps"] == 4
    assert (out / "pilot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ranking" / "manifest.json").is_file()  # scored here: no --ranking given

    code, _, err = run_cli(monkeypatch, capsys, "report", "--ranking", str(out / "ranking"))
    assert code == 0, err
    page = (out / "ranking" / "report" / "report.html").read_text()
    assert 'id="pilot"' in page and "speedup (steps)" in page and summary["verdict"][0].split(":")[0] in page
    assert "uniform runs (time)" in page and cost["summary"].split(";")[0] in page


def test_a_curve_from_before_eval_seconds_reads_with_it_null(tmp_path):
    row = {"arm": "uniform", "seed": 0, "step": 0, "tokens": 0, "seconds": 0.0, "accuracy": 0.5}
    pl.DataFrame([row]).write_parquet(tmp_path / pilot_record.CURVE)
    curve = pilot_record.read_curve(tmp_path)
    assert curve.columns == list(pilot_record.CURVE_SCHEMA)
    assert curve["eval_seconds"].to_list() == [None] and curve["accuracy"].to_list() == [0.5]


def _one_line_error(code, err, needle, logged: int = 0):
    """Exit 2 and one error line, last, after ``logged`` progress lines (off a terminal the
    pilot still says what it does, e.g. that it scores the training rows)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 + logged and lines[-1].startswith("error: ") and needle in lines[-1], err
    assert not any(line.startswith("error") for line in lines[:-1]) and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--arms", "uniform,curriculum"], "unknown arm 'curriculum'"),
        (["--reward", "exact"], "unknown --reward 'exact'"),
        (["--reward", "no_such_module_xyz:f"], "cannot import no_such_module_xyz"),
        (["--answer-field", "solution"], "no column 'solution' (--answer-field)"),
        (["--eval-rows", "24"], "leaves no training row"),
        (["--num-generations", "1"], "at least 2"),
    ],
)
def test_pilot_errors_are_one_line(monkeypatch, capsys, tiny_model_dir, data, tmp_path, extra, needle):
    out = tmp_path / "p"
    code, _, err = run_cli(monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, *extra))
    _one_line_error(code, err, needle)
    assert not out.exists()  # a failed start leaves nothing: no config.json with its settings


def test_a_failed_start_after_the_split_and_ranking_leaves_nothing(
    monkeypatch, capsys, tiny_model_dir, data, tmp_path
):
    """A mistake found only once the split is written and the ranking scored takes them
    back with the settings."""
    from anglecurate.base.errors import UserError
    from anglecurate.piloting import arms

    def refuses(*args):
        assert (out / "config.json").is_file() and (out / "data" / "train.parquet").is_file()
        assert (out / "ranking" / "manifest.json").is_file()
        raise UserError("found late")

    monkeypatch.setattr(arms, "build_orders", refuses)
    out = tmp_path / "p"
    code, _, err = run_cli(
        monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, "--arms", "uniform,gainrl")
    )
    _one_line_error(code, err, "found late", logged=1)
    assert err.startswith("scoring the ")  # the progress line a log file gets
    assert not out.exists()


def test_a_failed_start_keeps_a_started_study(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "p"
    (out / "runs" / "uniform-seed0").mkdir(parents=True)  # a run of this study has begun
    config = json.dumps(_config(tiny_model_dir, data, out))
    (out / "config.json").write_text(config)
    code, _, err = run_cli(monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, "--reward", "exact"))
    _one_line_error(code, err, "unknown --reward 'exact'")
    assert (out / "config.json").read_text() == config


def test_pilot_refuses_a_ranking_of_another_dataset(
    monkeypatch, capsys, tiny_model_dir, data, ranking, tmp_path
):
    out = tmp_path / "p"
    code, _, err = run_cli(
        monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, "--ranking", str(ranking))
    )
    _one_line_error(code, err, "ranks another dataset")
    assert not (out / "runs").exists()


def test_pilot_refuses_other_settings_in_the_same_folder(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "p"
    (out / "runs" / "uniform-seed0").mkdir(parents=True)  # a run of that study has started
    (out / "config.json").write_text(json.dumps({**_config(tiny_model_dir, data, out), "steps": 99}))
    code, _, err = run_cli(monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out))
    _one_line_error(code, err, "other settings (steps)")
    assert json.loads((out / "config.json").read_text())["steps"] == 99  # nothing overwritten


def test_a_corrected_rerun_after_a_failed_start_is_not_refused(
    monkeypatch, capsys, tiny_model_dir, data, tmp_path
):
    out = tmp_path / "p"
    code, _, err = run_cli(monkeypatch, capsys, *pilot_args(tiny_model_dir, data, out, "--train-rows", "1"))
    _one_line_error(code, err, "fewer than one GAIN-RL epoch")
    args = pilot_args(tiny_model_dir, data, out, "--arms", "uniform", "--steps", "1", "--json")
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert json.loads(stdout)["runs_finished"] == 1


def _config(model, data, out) -> dict:
    from anglecurate.piloting.plan import GRPOOptions, PilotConfig

    grpo = GRPOOptions(num_generations=2, prompts_per_step=2, max_completion_length=3, learning_rate=1e-4)
    cfg = PilotConfig(
        model=str(model), data=str(data), out=str(out), field="problem", answer_field="answer",
        id_field="id", seeds=1, steps=2, eval_every=1, eval_rows=4, grpo=grpo,
    )  # fmt: skip
    return cfg.to_dict()


def test_pilot_without_trl_names_the_extra(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a)
    )
    code, _, err = run_cli(monkeypatch, capsys, *pilot_args(tiny_model_dir, data, tmp_path / "p"))
    _one_line_error(code, err, "pip install 'anglecurate[trl]'")


@pytest.mark.slow
def test_smollm2_pilot_trains_the_real_gguf_model(monkeypatch, capsys, tmp_path):
    """The real model: a GGUF checkpoint trains (dequantised weights), on the built-in task."""
    out = tmp_path / "p"
    args = [
        "pilot", "--model", "builtin:smollm2", "--data", "builtin:arithmetic", "--id-field", "uid",
        "--field", "problem", "--answer-field", "answer", "--out", str(out), "--arms", "uniform,length",
        "--seeds", "1", "--steps", "2", "--eval-every", "2", "--eval-rows", "8", "--train-rows", "16",
        "--num-generations", "2", "--prompts-per-step", "2", "--max-completion-length", "8", "--json",
    ]  # fmt: skip
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    curves = pl.read_parquet(out / "pilot.parquet")
    assert curves.height == 4 and curves["tokens"].max() > 0
    assert set(json.loads(stdout)["arms"]) == {"uniform", "length"}


REWARD_MODULE = '''
def odd_length(completions, answer, **_):
    """1.0 when the completion's length plus the answer is odd: a reward that tells the
    untrained tiny model's answers apart even when they are all alike."""
    text = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float((len(t) + int(a)) % 2) for t, a in zip(text, answer)]
'''


def _hand_accuracy(model_dir, questions: list[str], answers: list[str], max_new: int, reward):
    """Greedy answers one prompt at a time (no batch, no padding, argmax token by token),
    rewarded and averaged: what the pilot's first evaluation must equal."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    scores, tokens = [], 0
    for question, answer in zip(questions, answers, strict=True):
        text = tok.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        new = greedy_by_hand(model, ids, max_new, stops={tok.eos_token_id})
        tokens += len(new)  # the stop token counts: it was generated
        completion = [{"role": "assistant", "content": tok.decode(new, skip_special_tokens=True)}]
        (r,) = reward(completions=[completion], answer=[answer])
        scores.append(min(max(r, 0.0), 1.0))
    return sum(scores) / len(scores), tokens


def test_pilot_values_match_a_hand_computation(monkeypatch, capsys, tiny_model_dir, data, tmp_path):
    """Values, not keys: the first held-out accuracy and its tokens against a hand loop over
    the untrained model, and every summary figure against the curve it summarises."""
    (tmp_path / "hand_reward.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "p"
    args = pilot_args(tiny_model_dir, data, out, "--arms", "uniform", "--reward", "hand_reward:odd_length")
    args[args.index("--max-completion-length") + 1] = "6"
    code, stdout, err = run_cli(monkeypatch, capsys, *args, "--json")
    assert code == 0, err
    held = pl.read_parquet(out / "data" / "eval.parquet")
    from hand_reward import odd_length

    accuracy, tokens = _hand_accuracy(
        tiny_model_dir, held["problem"].to_list(), held["answer"].to_list(), 6, odd_length
    )
    curve = pl.read_parquet(out / "pilot.parquet").sort("step")
    first = curve.row(0, named=True)
    assert first["step"] == 0 and first["tokens"] == 0
    assert first["accuracy"] == pytest.approx(accuracy) and first["eval_tokens"] == tokens
    assert 0 < accuracy < 1  # the reward tells completions apart, so the comparison can fail
    assert curve["eval_tokens"].to_list() == sorted(curve["eval_tokens"].to_list())  # cumulative

    entry = json.loads(stdout)["arms"]["uniform"]
    steps, acc = curve["step"].to_list(), curve["accuracy"].to_list()
    trapezoids = sum((steps[i + 1] - steps[i]) * (acc[i] + acc[i + 1]) / 2 for i in range(len(steps) - 1))
    assert entry["initial_accuracy"] == pytest.approx(acc[0])
    assert entry["final_accuracy"] == pytest.approx(acc[-1])
    assert entry["best_accuracy"] == pytest.approx(max(acc))
    assert entry["auc"] == pytest.approx(trapezoids / (steps[-1] - steps[0]))
    assert entry["steps"] == steps[-1] and entry["tokens"] == curve["tokens"][-1]
    summary = json.loads(stdout)
    assert summary["baseline_learned"] == (acc[-1] > acc[0])
    if not summary["baseline_learned"]:  # no target to reach: nothing to time
        assert entry["steps_to_target"] is None
        return
    reached = next(i for i, a in enumerate(acc) if a >= acc[-1])  # uniform's own target
    x0, x1, y0, y1 = steps[reached - 1], steps[reached], acc[reached - 1], acc[reached]
    hand = steps[reached] if reached == 0 else x0 + (acc[-1] - y0) * (x1 - x0) / (y1 - y0)
    assert entry["steps_to_target"] == pytest.approx(hand)
