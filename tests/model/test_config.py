"""The model config: pattern expansion, validation of bad combinations, shipped YAMLs, parameter counts."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from neo.config import compose, group_options
from neo.errors import ConfigError
from neo.model.config import ModelConfig, resolve_precision
from neo.model.params import count_params

EXPECTED = {"tiny", "gpt2_small", "gpt3_small", "gpt3_medium", "gpt3_large", "gpt3_xl", "gpt3_2.7B", "gpt3_6.7B"}
EXPECTED |= {"gpt3_13B", "gpt3_PAR_small", "neo_125M", "neo_1.3B", "neo_2.7B", "gpt3_175B", "gpt_1T"}
EXPECTED |= {"small", "medium", "large", "xl", "2.7B", "6.7B", "13B", "175B", "1T", "PAR_small"}  # GPT-Neo's names


def _load(name: str) -> ModelConfig:
    return compose([f"model={name}"]).model


def test_attention_types_expand_to_n_layer() -> None:
    cfg = ModelConfig(n_layer=6, attention_types=[[["global", "local"], 2], [["linear"], 1], "none"])
    assert cfg.layer_types() == ["global", "local", "global", "local", "linear", "none"]
    assert ModelConfig(n_layer=4, attention_types=[[["global", "local"], 2]]).scan_period() == 2
    assert ModelConfig(n_layer=4, attention_types=[[["global"], 4]], moe_layers=[1, 3]).scan_period() == 2
    assert ModelConfig(n_layer=3, attention_types=[[["global"], 2], "local"]).scan_period() == 3


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (dict(n_embd=100, n_head=3), "divisible"),
        (dict(n_layer=5), "expands to 12 layers"),
        (dict(attention_types=[[["global", "sparse"], 6]]), "sparse"),
        (dict(attention_types=[["global", 12, 3]]), "malformed"),
        (dict(activation_function="swishy"), "activation_function"),
        (dict(precision="float16"), "precision 'float16' is not one of: auto, float32, bfloat16"),
        (dict(param_dtype="auto"), "param_dtype"),
        (dict(n_vocab=2**31), r"must be below 2\*\*31"),
        (dict(remat_policy="some"), "remat_policy"),
        (dict(attention_impl="flash"), "attention_impl"),
        (dict(n_ctx=2048, axial_pos_emb=[32, 32]), "multiplying to"),
        (dict(axial_pos_emb=[32, 64], rotary_emb=True), "exclusive"),
        (dict(scalenorm=True, rezero=True), "exclusive"),
        (dict(moe_layers=[12]), "moe_layers"),
        (dict(mlm_training=True), "mlm_mask_id"),
        (dict(attn_dropout=1.0), "attn_dropout"),
        (dict(num_mem_kv=2, attention_types=[[["linear"], 12]]), "not implemented yet"),
    ],
)
def test_validate_rejects_bad_combinations(changes: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        ModelConfig(**changes).validate()
    assert "\n" not in str(info.value)


def test_every_name_is_shipped() -> None:  # each composes and validates: tests/test_config.py
    assert set(group_options("model")) >= EXPECTED


def test_neo_1_3b_parameter_count_matches_the_original() -> None:
    assert count_params(_load("neo_1.3B")) == 1_315_575_808


def test_count_params_needs_no_memory_for_the_big_ones() -> None:
    assert 170e9 < count_params(_load("gpt3_175B")) < 180e9
    assert count_params(_load("gpt_1T")) > 1e12


def test_precision_auto_is_bfloat16_on_accelerators_and_float32_on_cpus() -> None:
    assert [resolve_precision("auto", p) for p in ("tpu", "gpu", "cpu")] == ["bfloat16", "bfloat16", "float32"]
    assert resolve_precision("float32", "tpu") == "float32" and resolve_precision("bfloat16", "cpu") == "bfloat16"


def test_a_model_config_made_in_code_computes_in_the_dtype_its_devices_get() -> None:
    """Without a mesh preset (a ModelConfig made in code) `auto` is settled against the devices the model compiles
    for: float32 on these CPUs."""
    from neo.model.common import dtype_of

    assert ModelConfig().precision == "auto" and dtype_of("auto") == jnp.float32
