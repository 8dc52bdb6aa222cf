"""Every decoder a user brings: tiny random models of many families, scored end to end, each
scored layer compared with a naive float64 recomputation from a hook placed by hand on the
block the family's code names as its feed-forward (or, for layers without one, skipped)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
import transformers
from transformers import AutoModel

from anglecurate.base.errors import UserError
from anglecurate.scoring.angles.unit_sums import naive_angles
from anglecurate.scoring.config import ScoreConfig
from anglecurate.scoring.pipeline import plan, prepare_rows, score

from ..helpers import read_ranked

C = transformers.CONFIG_MAPPING
DIMS = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
MAMBA = dict(mamba_d_state=8, mamba_expand=2, use_mamba_kernels=False)


def _text(**extra):
    return {**DIMS, "num_hidden_layers": 2, "head_dim": 16, "max_position_embeddings": 128, **extra}


# family: (config builder given the vocabulary size, stack path, {layer: feed-forward path})
# The paths are read off each family's modeling code, independently of the discovery.
FAMILIES = {
    "llama": (lambda v: C["llama"](vocab_size=v, num_hidden_layers=3, **DIMS), "layers", "mlp"),
    "qwen3": (lambda v: C["qwen3"](vocab_size=v, num_hidden_layers=3, head_dim=16, **DIMS), "layers", "mlp"),
    "mixtral (MoE)": (
        lambda v: C["mixtral"](vocab_size=v, num_hidden_layers=2, num_local_experts=4, **DIMS),
        "layers",
        "mlp",
    ),
    "deepseek_v3 (dense, then MoE)": (
        lambda v: C["deepseek_v3"](
            vocab_size=v,
            num_hidden_layers=3,
            first_k_dense_replace=1,
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_group=1,
            topk_group=1,
            moe_intermediate_size=32,
            q_lora_rank=32,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=8,
            v_head_dim=16,
            **{**DIMS, "num_key_value_heads": 4},  # MLA: a key and a value per head
        ),  # fmt: skip
        "layers",
        "mlp",
    ),
    "gemma2 (no SDPA)": (
        lambda v: C["gemma2"](vocab_size=v, num_hidden_layers=2, head_dim=16, **DIMS),
        "layers",
        "mlp",
    ),
    "gpt_oss (no SDPA, MoE)": (
        lambda v: C["gpt_oss"](
            vocab_size=v,
            num_hidden_layers=2,
            head_dim=16,
            num_local_experts=4,
            num_experts_per_tok=2,
            **DIMS,
        ),
        "layers",
        "mlp",
    ),
    "bloom (no SDPA)": (lambda v: C["bloom"](vocab_size=v, hidden_size=64, n_layer=2, n_head=4), "h", "mlp"),
    "mpt (no SDPA)": (
        lambda v: C["mpt"](vocab_size=v, d_model=64, n_layers=2, n_heads=4, expansion_ratio=2),
        "blocks",
        "ffn",
    ),
    "opt (fc1 on the layer)": (
        lambda v: C["opt"](
            vocab_size=v,
            hidden_size=64,
            ffn_dim=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=64,
        ),
        "decoder.layers",
        "fc1",
    ),
    "biogpt (fc1 on the layer)": (
        lambda v: C["biogpt"](
            vocab_size=v, num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4
        ),  # fmt: skip
        "layers",
        "fc1",
    ),
    "xglm (fc1 on the layer, no SDPA)": (
        lambda v: C["xglm"](vocab_size=v, d_model=64, ffn_dim=96, num_layers=2, attention_heads=4),
        "layers",
        "fc1",
    ),
    "phi (parallel attention)": (
        lambda v: C["phi"](vocab_size=v, num_hidden_layers=2, **DIMS),
        "layers",
        "mlp",
    ),
    "cohere (parallel attention)": (
        lambda v: C["cohere"](vocab_size=v, num_hidden_layers=2, **DIMS),
        "layers",
        "mlp",
    ),
    "gpt_neox (parallel attention)": (
        lambda v: C["gpt_neox"](
            vocab_size=v, num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4
        ),  # fmt: skip
        "layers",
        "mlp",
    ),
    "falcon (parallel attention)": (
        lambda v: C["falcon"](vocab_size=v, num_hidden_layers=2, hidden_size=64, num_attention_heads=4),
        "h",
        "mlp",
    ),
    "rwkv (channel mix)": (
        lambda v: C["rwkv"](
            vocab_size=v, hidden_size=64, num_hidden_layers=2, attention_hidden_size=64, intermediate_size=96
        ),  # fmt: skip
        "blocks",
        "feed_forward",
    ),
    "qwen3_next (linear-attention hybrid)": (
        lambda v: C["qwen3_next"](
            vocab_size=v,
            num_hidden_layers=4,
            head_dim=16,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            linear_num_value_heads=4,
            linear_num_key_heads=2,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            **DIMS,
        ),  # fmt: skip
        "layers",
        "mlp",
    ),
    "jamba (mixed stack)": (
        lambda v: C["jamba"](
            vocab_size=v,
            num_hidden_layers=4,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=4,
            num_experts_per_tok=2,
            mamba_dt_rank=8,
            **DIMS,
            **MAMBA,
        ),  # fmt: skip
        "layers",
        "feed_forward",
    ),
    "falcon_h1 (parallel attention and Mamba)": (
        lambda v: C["falcon_h1"](
            vocab_size=v,
            num_hidden_layers=2,
            head_dim=16,
            mamba_d_ssm=64,
            mamba_n_heads=4,
            mamba_d_head=16,
            mamba_d_state=8,
            mamba_n_groups=1,
            **DIMS,
        ),  # fmt: skip
        "layers",
        "feed_forward",
    ),
    "zamba (mixed stack, shared block)": (
        lambda v: C["zamba"](
            vocab_size=v,
            num_hidden_layers=4,
            num_key_value_heads=4,
            attention_head_dim=32,
            n_mamba_heads=2,
            mamba_dt_rank=8,
            attn_layer_period=2,
            attn_layer_offset=1,
            tie_word_embeddings=False,
            hidden_size=64,
            intermediate_size=96,
            num_attention_heads=4,
            **MAMBA,
        ),  # fmt: skip
        "layers",
        "zamba",  # which layers are hybrids follows the config's own layer list
    ),
    "zamba2 (mixed stack, shared block)": (
        lambda v: C["zamba2"](
            vocab_size=v,
            num_hidden_layers=4,
            mamba_d_state=8,
            mamba_expand=2,
            mamba_headdim=16,
            n_mamba_heads=8,
            mamba_ngroups=1,
            layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
            hybrid_layer_ids=[1, 3],
            num_mem_blocks=1,
            use_mem_rope=False,
            tie_word_embeddings=False,
            hidden_size=64,
            intermediate_size=96,
            num_attention_heads=4,
            num_key_value_heads=4,
        ),  # fmt: skip
        "layers",
        {1: "shared_transformer.feed_forward", 3: "shared_transformer.feed_forward"},
    ),
    "nemotron_h (one mixer per block)": (
        lambda v: C["nemotron_h"](
            vocab_size=v,
            num_hidden_layers=4,
            head_dim=16,
            hybrid_override_pattern="M-*-",
            mamba_num_heads=4,
            mamba_head_dim=16,
            ssm_state_size=8,
            n_groups=1,
            **DIMS,
        ),  # fmt: skip
        "layers",
        {1: "mixer", 3: "mixer"},
    ),
    "qwen2_5_vl (multimodal)": (
        lambda v: C["qwen2_5_vl"](
            text_config=_text(vocab_size=v, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
            vision_config=dict(
                depth=1,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                fullatt_block_indexes=[0],
            ),
        ),  # fmt: skip
        "layers",
        "mlp",
    ),
    "gemma3 (multimodal)": (
        lambda v: C["gemma3"](
            text_config=_text(vocab_size=v, sliding_window=8),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            ),
            mm_tokens_per_image=4,
        ),  # fmt: skip
        "layers",
        "mlp",
    ),
}

QUESTIONS = [
    "What is 7 times 8?",
    "Name the largest planet of the solar system and say why it is so large.",
    "Solve for x: 2x + 3 = 11.",
    "Why is the sky blue?",
    "x",
]


def _save(family, tokenizer, folder):
    build, _, _ = FAMILIES[family]
    config = build(len(tokenizer))
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return config


def _hand_placed(folder, config, stack, names, cfg):
    """{uid: {layer: (c_intra, c_inter)}} from batch-1 forwards, hooks on the named blocks."""
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    if config.get_text_config() is not config:
        model = model.get_decoder()
    layers = model.get_submodule(stack)
    current, kept = [None], {}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, _a, i=i: current.__setitem__(0, i))
        for i, layer in enumerate(layers)
    ]

    def keep(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if current[0] in names:
            kept[current[0]] = hidden.reshape(-1, hidden.shape[-1]).double()  # [T, d] at batch 1

    for module in {id(m): m for m in (layers[i].get_submodule(n) for i, n in names.items())}.values():
        hooks.append(module.register_forward_pre_hook(keep, with_kwargs=True))
    p = plan(cfg)
    frame = next(iter(p.dataset.iter_chunks(len(QUESTIONS))))[1]
    uids, _, segmented = prepare_rows(frame, np.arange(frame.height), cfg, p)
    result = {}
    try:
        with torch.inference_mode():
            for row, seg in segmented.items():
                kept.clear()
                model(input_ids=torch.tensor([seg.input_ids]), use_cache=False)
                result[uids[row]] = {i: naive_angles(kept[i], seg.n_prefix, seg.n_question) for i in names}
    finally:
        for h in hooks:
            h.remove()
    return result


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_scored_layer_matches_a_hand_placed_float64_reference(family, tokenizer, tmp_path):
    folder = tmp_path / "model"
    config = _save(family, tokenizer, folder)
    _, stack, where = FAMILIES[family]
    n_layers = config.get_text_config().num_hidden_layers
    if where == "zamba":  # the hybrid layers, as Zamba's own config lists its layer kinds
        where = {
            i: "shared_transf.feed_forward"
            for i, kind in enumerate(config.layers_block_type)
            if kind == "hybrid"
        }
    names = where if isinstance(where, dict) else dict.fromkeys(range(n_layers), where)
    data = tmp_path / "q.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": q}) for q in QUESTIONS))
    cfg = ScoreConfig(model=str(folder), data=str(data), out=str(tmp_path / "out"), dtype="fp32")
    result = score(cfg)
    assert result.manifest["run"]["layers"] == sorted(names), "exactly the layers with a feed-forward block"
    assert result.manifest["device"]["attn_implementation"] in ("sdpa", "eager")
    if config.get_text_config() is not config:  # multimodal: the summary says what was scored
        assert result.summary()["scored_part"].startswith("the language model (")
        assert result.summary()["scored"] == len(QUESTIONS)
    ranked = read_ranked(tmp_path / "out")
    naive = _hand_placed(folder, config, stack, names, cfg)
    assert len(naive) == len(QUESTIONS)
    for row in ranked.iter_rows(named=True):
        want = naive[row["uid"]]
        for k, layer in enumerate(sorted(names)):
            assert row["c_intra_layers"][k] == pytest.approx(want[layer][0], abs=2e-5, nan_ok=True), (
                layer,
                "c_intra",
            )
            assert row["c_inter_layers"][k] == pytest.approx(want[layer][1], abs=2e-5, nan_ok=True), (
                layer,
                "c_inter",
            )


def test_layers_without_a_feed_forward_block_are_named_and_refused_in_one_line(
    tokenizer, tmp_path, math_json
):
    folder = tmp_path / "model"
    _save("nemotron_h (one mixer per block)", tokenizer, folder)
    base = dict(model=str(folder), data=str(math_json), field="problem", dtype="fp32")
    with pytest.raises(UserError) as info:
        score(ScoreConfig(**base, out=str(tmp_path / "o"), layers="0,1"))
    assert str(info.value) == (
        "--layers: layer 0 of NemotronHModel has no feed-forward block (the signal is an MLP's input); "
        "layers with one: 1, 3"
    )
    assert not (tmp_path / "o").exists()
    last = score(ScoreConfig(**base, out=str(tmp_path / "last"), layers="last"))
    assert last.manifest["run"]["layers"] == [3]
    again = score(ScoreConfig(**base, out=str(tmp_path / "last"), layers="last"))
    assert again.status == "already complete"
    both = score(ScoreConfig(**base, out=str(tmp_path / "all")))
    assert both.manifest["run"]["model"]["ffn_layers"] == [1, 3]
    assert score(ScoreConfig(**base, out=str(tmp_path / "all"))).status == "already complete"
    with pytest.raises(UserError, match="different layers"):
        score(ScoreConfig(**base, out=str(tmp_path / "all"), layers="last"))


def test_a_pure_state_space_model_is_refused_saying_why(tokenizer, tmp_path, math_json):
    folder = tmp_path / "mamba"
    config = C["mamba"](
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, state_size=8, expand=2
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = ScoreConfig(model=str(folder), data=str(math_json), out=str(tmp_path / "o"), field="problem")
    with pytest.raises(
        UserError, match="no layer of MambaModel has a feed-forward block: it is a pure state-space"
    ):
        score(cfg)
    assert not (tmp_path / "o").exists()


def test_scores_are_the_same_with_the_attention_named_or_chosen(tokenizer, tmp_path, math_json):
    folder = tmp_path / "model"
    _save("gemma2 (no SDPA)", tokenizer, folder)
    base = dict(model=str(folder), data=str(math_json), field="problem", dtype="fp32", layers="last")
    auto = score(ScoreConfig(**base, out=str(tmp_path / "auto")))
    eager = score(ScoreConfig(**base, out=str(tmp_path / "eager"), attn_implementation="eager"))
    assert auto.manifest["device"]["attn_implementation"] == "eager"
    assert read_ranked(tmp_path / "auto").equals(read_ranked(tmp_path / "eager"))
    assert pl.read_parquet(tmp_path / "auto" / "ranked").height == 40
    assert eager.summary()["attention"] == "eager"
