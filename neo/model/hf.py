"""Pure conversions between Hugging Face GPT-Neo (config dict + tensors) and neo (ModelConfig + params).

Reading and writing files (config.json, model.safetensors) belongs to the caller; this module only maps names and
layouts. The tensor mapping is the `HF` table (`neo.model.keymap`): HF Linear weights are [out, in]; neo kernels are
[in, out] with heads split out. HF's legacy `attn.attention.bias` / `masked_bias` buffers are skipped on input.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from neo.errors import ConfigError
from neo.model.config import ModelConfig
from neo.model.keymap import LINEAR, LINEAR_FROM_HEADS, LINEAR_TO_HEADS, Format, Key
from neo.model.params import Params

HF_TO_NEO_ACT = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_fast": "gelu",
    "gelu": "gelu_exact",
    "relu": "relu",
    "relu6": "relu6",
    "silu": "silu",
    "swish": "silu",
    "mish": "mish",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
}
NEO_TO_HF_ACT = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "relu6": "relu6", "silu": "silu"}
NEO_TO_HF_ACT |= {"swish": "silu", "mish": "mish", "sigmoid": "sigmoid", "tanh": "tanh"}

# HF's tensor names without the "transformer." prefix that GPTNeoForCausalLM adds to all but lm_head.
HF = Format(
    model=(
        Key("wte", "wte.weight"),
        Key("pos/wpe", "wpe.weight"),
        Key("ln_f/scale", "ln_f.weight"),
        Key("ln_f/bias", "ln_f.bias"),
    ),
    attention=(
        Key("ln_1/scale", "h.{i}.ln_1.weight"),
        Key("ln_1/bias", "h.{i}.ln_1.bias"),
        Key("attn/q", "h.{i}.attn.attention.q_proj.weight", LINEAR_TO_HEADS),
        Key("attn/k", "h.{i}.attn.attention.k_proj.weight", LINEAR_TO_HEADS),
        Key("attn/v", "h.{i}.attn.attention.v_proj.weight", LINEAR_TO_HEADS),
        Key("attn/o", "h.{i}.attn.attention.out_proj.weight", LINEAR_FROM_HEADS),
        Key("attn/o_bias", "h.{i}.attn.attention.out_proj.bias"),
    ),
    mlp=(
        Key("ln_2/scale", "h.{i}.ln_2.weight"),
        Key("ln_2/bias", "h.{i}.ln_2.bias"),
        Key("mlp/c_fc", "h.{i}.mlp.c_fc.weight", LINEAR),
        Key("mlp/c_fc_bias", "h.{i}.mlp.c_fc.bias"),
        Key("mlp/c_proj", "h.{i}.mlp.c_proj.weight", LINEAR),
        Key("mlp/c_proj_bias", "h.{i}.mlp.c_proj.bias"),
    ),
)
HF_UNTIED = dataclasses.replace(HF, model=(*HF.model, Key("lm_head", "lm_head.weight", LINEAR)))


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> ModelConfig:
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_TO_NEO_ACT:
        raise ConfigError(f"HF activation_function '{act}' has no neo equivalent; supported: {sorted(HF_TO_NEO_ACT)}")
    cfg = ModelConfig(
        n_vocab=hf["vocab_size"],
        n_ctx=hf["max_position_embeddings"],
        n_embd=hf["hidden_size"],
        n_head=hf["num_heads"],
        n_layer=hf["num_layers"],
        attention_types=hf.get("attention_types", [[["global", "local"], hf["num_layers"] // 2]]),
        window_size=hf.get("window_size", 256),
        activation_function=HF_TO_NEO_ACT[act],
        mlp_dim=hf.get("intermediate_size") or 0,
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        embed_dropout=hf.get("embed_dropout", 0.0),
        attn_dropout=hf.get("attention_dropout", 0.0),
        res_dropout=hf.get("resid_dropout", 0.0),
        no_weight_tie=not hf.get("tie_word_embeddings", True),
        **overrides,
    )
    cfg.validate()
    return cfg


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    unsupported = [
        key
        for key, on in {
            "num_mem_kv": cfg.num_mem_kv,
            "axial_pos_emb": cfg.axial_pos_emb,
            "rotary_emb": cfg.rotary_emb,
            "mlp_glu": cfg.mlp_glu,
            "scalenorm": cfg.scalenorm,
            "rezero": cfg.rezero,
            "macaron": cfg.macaron,
            "moe_layers": cfg.moe_layers,
            "mlm_training": cfg.mlm_training,
        }.items()
        if on
    ]
    unsupported += [f"attention type '{t}'" for t in sorted(set(cfg.layer_types()) - {"global", "local"})]
    if cfg.activation_function not in NEO_TO_HF_ACT:
        unsupported.append(f"activation_function '{cfg.activation_function}'")
    if unsupported:
        raise ConfigError(f"Hugging Face GPT-Neo cannot represent {', '.join(unsupported)}; export a plain GPT-Neo")
    return {
        "architectures": ["GPTNeoForCausalLM"],
        "model_type": "gpt_neo",
        "vocab_size": cfg.n_vocab,
        "max_position_embeddings": cfg.n_ctx,
        "hidden_size": cfg.n_embd,
        "num_heads": cfg.n_head,
        "num_layers": cfg.n_layer,
        "attention_types": _compact_types(cfg.layer_types()),
        "attention_layers": cfg.layer_types(),
        "window_size": cfg.window_size,
        "intermediate_size": cfg.mlp_dim or None,
        "activation_function": NEO_TO_HF_ACT[cfg.activation_function],
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "embed_dropout": cfg.embed_dropout,
        "attention_dropout": cfg.attn_dropout,
        "resid_dropout": cfg.res_dropout,
        "initializer_range": 0.02,
        "tie_word_embeddings": not cfg.no_weight_tie,
        "use_cache": True,
    }


def _compact_types(types: list[str]) -> list[Any]:
    for p in range(1, len(types) + 1):
        if len(types) % p == 0 and types == types[:p] * (len(types) // p):
            return [[types[:p], len(types) // p]]
    return [[types, 1]]


def from_hf(hf_config: dict[str, Any], state: dict[str, np.ndarray], **overrides: Any) -> tuple[ModelConfig, Params]:
    """HF GPT-Neo config + state dict (numpy) -> neo config + plain params (scanned unless overridden)."""
    cfg = config_from_hf(hf_config, **overrides)
    state = {k.removeprefix("transformer."): v for k, v in state.items()}

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise ConfigError(f"the HF checkpoint has no tensor '{name}'; is it a GPT-Neo model?")
        return state[name]

    return cfg, _format(cfg).read(cfg, take)


def to_hf(cfg: ModelConfig, params: Params) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """neo config + params -> HF GPT-Neo config dict + state dict (float32 numpy, contiguous, safetensors-ready)."""
    hf_config = config_to_hf(cfg)
    ours = _format(cfg).write(cfg, params)
    state = {(k if k == "lm_head.weight" else f"transformer.{k}"): v for k, v in ours.items()}
    if not cfg.no_weight_tie:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    return hf_config, state


def _format(cfg: ModelConfig) -> Format:
    return HF_UNTIED if cfg.no_weight_tie else HF
