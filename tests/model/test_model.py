"""Model structure discovery across families, options that select layers and dtypes."""

from __future__ import annotations

import pytest
import torch

from anglecurate.base.errors import UserError
from anglecurate.model.load import load_config, load_model, resolve_dtype, resolve_source
from anglecurate.scoring.config import parse_layers
from anglecurate.scoring.ranking import RankChoice

from ..conftest import build_tiny_model


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_layers_and_mlps_found_by_structure(tmp_path, family):
    path = build_tiny_model(family, 300, tmp_path / family)
    source = resolve_source(str(path))
    config = load_config(source)
    model = load_model(source, config, torch.float32, torch.device("cpu"))
    assert model.num_layers == 3
    # the structural rule picks exactly the feed-forward block of each decoder layer
    assert all(mlp is layer.mlp for mlp, layer in zip(model.mlps, model.layers, strict=True))


def test_stop_early_skips_the_layers_above(tmp_path):
    from anglecurate.scoring.capture import Batch, angle_capture

    path = build_tiny_model("llama", 300, tmp_path / "m")
    source = resolve_source(str(path))
    model = load_model(source, load_config(source), torch.float32, torch.device("cpu"))
    calls = []
    handles = [
        m.register_forward_pre_hook(lambda *_a, i=i: calls.append(i)) for i, m in enumerate(model.mlps)
    ]
    masks = torch.zeros(1, 2, 6)
    masks[0, 0, :2], masks[0, 1, 2:5] = 1, 1
    ranges = torch.tensor([0, 2]), torch.tensor([2, 5])
    batch = Batch(
        torch.arange(6).unsqueeze(0), torch.ones(1, 6, dtype=torch.long), *ranges, segment_masks=masks
    )
    try:
        with angle_capture(model, [0, 1]) as capture:
            intra, inter, _ = capture.run(batch)
        assert calls == [0, 1]  # layer 2 never ran
        assert intra.shape == (1, 2) and inter.shape == (1, 2)
    finally:
        for h in handles:
            h.remove()
    # the capture hooks are gone once the context exits
    assert all(not m._forward_pre_hooks for m in model.mlps)


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("last", 4) == [3]
    assert parse_layers("0, -1,2,-1", 4) == [0, 2, 3]
    with pytest.raises(UserError, match="does not exist"):
        parse_layers("4", 4)
    with pytest.raises(UserError, match="does not exist"):
        parse_layers("-5", 4)
    with pytest.raises(UserError, match="comma-separated"):
        parse_layers("1;2", 4)
    assert RankChoice().resolved([0, 2], 4).layer == 2
    assert RankChoice(layer=-4).resolved([0, 2], 4).layer == 0
    with pytest.raises(UserError, match="not among"):
        RankChoice(layer=1).resolved([0, 2], 4)


def test_dtype_resolution(tmp_path):
    path = build_tiny_model("llama", 300, tmp_path / "m")
    config = load_config(resolve_source(str(path)))
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", config, cpu) == torch.float32
    assert resolve_dtype("bf16", config, cpu) == torch.bfloat16
    config.dtype = torch.bfloat16
    assert resolve_dtype("auto", config, cpu) == torch.bfloat16  # the checkpoint's dtype
    config.dtype = torch.float16
    assert resolve_dtype("auto", config, cpu) == torch.float32  # no fp16 matmuls on CPU


class _Mixer(torch.nn.Module):
    """Causal token mixing: a running mean of a projection."""

    def __init__(self, d):
        super().__init__()
        self.proj = torch.nn.Linear(d, d)

    def forward(self, x):
        steps = torch.arange(1, x.shape[-2] + 1, device=x.device)[:, None]
        return self.proj(x).cumsum(-2) / steps


class _ParentBoundMLP(torch.nn.Module):
    """An MLP that only runs inside its block: run alone (as the probe does) it raises ``error``."""

    def __init__(self, d, error):
        super().__init__()
        self.up, self.down, self.error, self.inside = (
            torch.nn.Linear(d, 2 * d),
            torch.nn.Linear(2 * d, d),
            error,
            False,
        )

    def forward(self, x):
        if not self.inside:
            raise self.error
        return self.down(torch.relu(self.up(x)))


class _Block(torch.nn.Module):
    def __init__(self, d, error):
        super().__init__()
        self.mixer, self.mlp = _Mixer(d), _ParentBoundMLP(d, error)

    def forward(self, x):
        x = x + self.mixer(x)
        self.mlp.inside = True
        try:
            return x + self.mlp(x)
        finally:
            self.mlp.inside = False


class _Decoder(torch.nn.Module):
    def __init__(self, error, d=8):
        super().__init__()
        self.embed = torch.nn.Embedding(16, d)
        self.layers = torch.nn.ModuleList([_Block(d, error) for _ in range(2)])

    def forward(self, input_ids, use_cache=False):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), AttributeError("'NoneType' object has no attribute 'scale'")],
    ids=["runtime", "attribute"],
)
def test_a_failing_probe_is_an_error_naming_the_module_not_a_classification(error):
    from anglecurate.model.layers import wrap_model

    with pytest.raises(UserError) as caught:
        wrap_model(_Decoder(error), 2, hidden_size=8)
    message = str(caught.value)
    assert "probing 'mlp' (_ParentBoundMLP) of layer 0 failed with" in message and str(error) in message
    assert "unsupported or its code has a bug" in message and "\n" not in message
    assert caught.value.__cause__ is error


def test_a_module_that_wants_its_own_inputs_is_not_position_wise():
    """An expected failure of the probe (a wrong argument) still classes the module: here the
    only feed-forward block, so the model is refused as having none."""
    from anglecurate.model.layers import wrap_model

    with pytest.raises(UserError, match="no layer of _Decoder has a feed-forward block"):
        wrap_model(_Decoder(TypeError("forward() missing 1 required positional argument")), 2, hidden_size=8)


@pytest.mark.parametrize("fails", [False, True], ids=["loads", "fails"])
def test_loading_leaves_the_environment_and_restores_transformers_quiet(tmp_path, monkeypatch, fails):
    """os.environ is never changed by a load (local_files_only keeps it off the hub), and
    transformers' logger level (NOTSET included) and progress-bar switch come back exactly,
    even when the load raises."""
    import logging as std_logging
    import os

    from transformers import AutoConfig
    from transformers.utils import logging

    path = build_tiny_model("llama", 300, tmp_path / "m")
    source = resolve_source(str(path))
    original = AutoConfig.from_pretrained.__func__
    seen = {}

    def observing(cls, *args, **kwargs):
        seen.update(
            env=dict(os.environ), level=logging.get_verbosity(), bars=logging.is_progress_bar_enabled()
        )
        if fails:
            raise OSError("disk on fire")
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoConfig, "from_pretrained", classmethod(observing))
    root = logging._get_library_root_logger()
    monkeypatch.setattr(root, "level", root.level)  # put back after the test, whatever happens
    monkeypatch.setattr(logging, "_tqdm_active", logging._tqdm_active)
    root.setLevel(std_logging.NOTSET)
    logging.enable_progress_bar()
    before = dict(os.environ)
    if fails:
        with pytest.raises(UserError, match="disk on fire"):
            load_config(source)
    else:
        assert load_config(source).num_hidden_layers == 3
    assert seen["env"] == before and dict(os.environ) == before  # during and after
    assert seen["level"] == logging.ERROR and seen["bars"] is False  # quiet while loading
    assert root.level == std_logging.NOTSET and logging.is_progress_bar_enabled()
