"""The training-time angle: measured in a real GRPOTrainer's loss forward, equal to a naive
float64 recomputation on the same sequences, counted once per sequence, and fed to the
centre's move by exactly GAIN-RL's formula."""

from __future__ import annotations

import pytest
import torch

from anglecurate.scheduling.train_angle import AngleMeter, sequence_angles

pytest.importorskip("trl")

from datasets import load_dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from anglecurate.scheduling.curriculum import Curriculum  # noqa: E402
from anglecurate.scheduling.epochs import ScheduleConfig, create_schedule  # noqa: E402
from anglecurate.scheduling.sampler import GaussianSampler, SamplerParams  # noqa: E402
from anglecurate.trl import GainRLGRPOTrainer, track  # noqa: E402

from .test_trl import SAMPLER, grpo_args  # noqa: E402


def naive_angle(hidden: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of the real tokens of one sequence, float64, O(T^2)."""
    x = hidden[mask.bool()].double()
    units = x / x.norm(dim=-1, keepdim=True)
    cos = units @ units.T
    n = x.shape[0]
    return ((cos.sum() - cos.diagonal().sum()) / (n * (n - 1))).item()


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 2e-2)]
)
def test_sequence_angles_match_the_naive_reference_on_ragged_masks(dtype, tol):
    torch.manual_seed(0)
    hidden = torch.randn(3, 9, 16, dtype=torch.float64) + 0.5  # a shared direction: cosines > 0
    mask = torch.zeros(3, 9, dtype=torch.long)
    mask[0, 2:7] = 1  # left-padded prompt, right-padded completion
    mask[1, :] = 1
    mask[2, 4:6] = 1  # two real tokens
    got = sequence_angles(hidden.to(dtype), mask)
    assert got.dtype == torch.float64
    for b in range(3):
        assert got[b].item() == pytest.approx(naive_angle(hidden[b], mask[b]), abs=tol)
    one = torch.zeros(1, 9, dtype=torch.long)
    one[0, 3] = 1
    assert torch.isnan(sequence_angles(hidden[:1], one)).all()  # one token: no pair


def test_meter_counts_only_inside_measuring_and_removes_its_hooks():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    meter = AngleMeter(layer=0)
    x = torch.randn(2, 5, 4)
    with meter.attached(model, model[1]):
        model(x)
        assert meter.take() == (0.0, 0)  # not armed: generation and reference passes
        with meter.measuring(x):
            model(x)
        total, count = meter.take()
        assert count == 2
        with meter.measuring(x):  # the same batch fed again (GRPO's num_iterations)
            model(x)
        assert meter.take() == (0.0, 0)
    assert not model._forward_hooks and not model[1]._forward_hooks and not model._forward_pre_hooks


def meter_hooks(model) -> list[str]:
    """The meter's hooks left on ``model`` (TRL and transformers add hooks of their own)."""
    hooks = [h for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]]
    return [h.__qualname__ for h in hooks if "AngleMeter" in getattr(h, "__qualname__", "")]


class CheckedTrainer(GainRLGRPOTrainer):
    """Recomputes, before each loss forward, the angle of every sequence the naive way: a
    second forward of the same weights with a plain hook, reduced in float64."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected: dict[int, list[float]] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            policy = self.accelerator.unwrap_model(model)
            block = policy.model.layers[self.angle_meter.layer].mlp
            captured = []
            handle = block.register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
            try:
                with torch.no_grad():
                    policy(input_ids=ids, attention_mask=mask)
            finally:
                handle.remove()
            angles = [naive_angle(captured[0][b], mask[b]) for b in range(ids.shape[0])]
            self.expected.setdefault(self.curriculum.current, []).extend(angles)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def all_right(completions, **kwargs):
    return [1.0] * len(completions)


def closed_loop(ranking, tiny_model_dir, tmp_path, reward, trainer_cls=GainRLGRPOTrainer, args=None, **kw):
    """A schedule of 8 prompts per epoch over the tiny ranking, and a trainer on it."""
    s = tmp_path / "s"
    create_schedule(
        ScheduleConfig(
            str(ranking), str(s), per_epoch=8, seed=3, sampler=SAMPLER, batch_multiple=4, exports=("trl",)
        )
    )
    dataset = load_dataset("parquet", data_files=str(s / "rows.parquet"), split="train")
    curriculum = Curriculum(s, dataset["uid"])
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        reward_funcs=[track(curriculum, reward)],
        args=grpo_args(tmp_path / "run", **(args or {})),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        curriculum=curriculum,
        **kw,
    )
    return curriculum, trainer


def test_grpo_trainer_feeds_the_measured_angle_to_the_window(ranking, tiny_model_dir, tmp_path):
    def half_right(completions, uid, **kwargs):
        return [float(int(u[1:]) % 2) for u in uid]

    curriculum, trainer = closed_loop(
        ranking, tiny_model_dir, tmp_path, half_right, CheckedTrainer, args={"num_train_epochs": 2}
    )
    assert curriculum.rank_layer == 2  # the ranking's layer: the deepest scored
    hooks_before = meter_hooks(trainer.model)
    trainer.train()
    for epoch in (0, 1):
        expected = trainer.expected[epoch]
        assert len(expected) == 8 * 2  # every prompt's 2 completions, each once
        assert curriculum.angle(epoch) == pytest.approx(sum(expected) / len(expected), abs=1e-4)
        assert curriculum.feedback_totals(epoch)[3] == len(expected)
    # The centre of epoch 1 moved by n tanh(alpha (acc - beta)) + n tanh(alpha angle), clamped.
    params = SamplerParams.for_size(40, **SAMPLER)
    reference = GaussianSampler(40, 8, params, seed=3)
    reference.update(curriculum.accuracy(0), curriculum.angle(0))
    assert curriculum.centre(1) == reference.mu
    move = params.n * torch.tanh(torch.tensor(params.alpha * (curriculum.accuracy(0) - params.beta))).item()
    move += params.n * torch.tanh(torch.tensor(params.alpha * curriculum.angle(0))).item()
    assert curriculum.centre(1) == pytest.approx(min(max(move, params.adj_min), params.adj_max), rel=1e-6)
    assert hooks_before == [] and meter_hooks(trainer.model) == []  # the meter's hooks went with the run


def test_angle_is_counted_once_with_gradient_checkpointing_and_repeated_iterations(
    ranking, tiny_model_dir, tmp_path
):
    args = {"gradient_checkpointing": True, "num_iterations": 2}
    curriculum, trainer = closed_loop(ranking, tiny_model_dir, tmp_path, all_right, args=args)
    trainer.train()
    assert curriculum.feedback_totals(0)[3] == 8 * 2
    assert 0.0 < curriculum.angle(0) < 1.0


def test_measure_angle_false_feeds_accuracy_alone(ranking, tiny_model_dir, tmp_path):
    curriculum, trainer = closed_loop(ranking, tiny_model_dir, tmp_path, all_right, measure_angle=False)
    trainer.train()
    assert curriculum.angle(0) is None and curriculum.accuracy(0) == 1.0
