"""Pure conversions between Hugging Face GPT-Neo (config dict + tensors) and neo (ModelConfig + params).

Reading and writing files (config.json, model.safetensors) belongs to the caller; this module only maps names and
layouts. HF Linear weights are [out, in]; neo kernels are [in, out] with heads split out: q/k/v [embd, heads, kv],
o [heads, kv, embd]. HF's legacy `attn.attention.bias` / `masked_bias` buffers are skipped on input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neo.errors import ConfigError
from neo.model.config import ModelConfig
from neo.model.params import Params, layer_params, stack_layer_params

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
    state = {k.removeprefix("transformer."): np.asarray(v, np.float32) for k, v in state.items()}
    h, hd, d = cfg.n_head, cfg.head_dim, cfg.n_embd

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise ConfigError(f"the HF checkpoint has no tensor '{name}'; is it a GPT-Neo model?")
        return state[name]

    layers = []
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        a = p + "attn.attention."
        block: Params = {
            "ln_1": {"scale": take(p + "ln_1.weight"), "bias": take(p + "ln_1.bias")},
            "ln_2": {"scale": take(p + "ln_2.weight"), "bias": take(p + "ln_2.bias")},
            "mlp": {
                "c_fc": take(p + "mlp.c_fc.weight").T,
                "c_fc_bias": take(p + "mlp.c_fc.bias"),
                "c_proj": take(p + "mlp.c_proj.weight").T,
                "c_proj_bias": take(p + "mlp.c_proj.bias"),
            },
        }
        block["attn"] = {n: take(a + f"{n}_proj.weight").T.reshape(d, h, hd) for n in ("q", "k", "v")}
        block["attn"]["o"] = take(a + "out_proj.weight").T.reshape(h, hd, d)
        block["attn"]["o_bias"] = take(a + "out_proj.bias")
        layers.append(block)
    params: Params = {
        "wte": take("wte.weight"),
        "pos": {"wpe": take("wpe.weight")},
        "ln_f": {"scale": take("ln_f.weight"), "bias": take("ln_f.bias")},
        **stack_layer_params(cfg, layers),
    }
    if cfg.no_weight_tie:
        params["lm_head"] = take("lm_head.weight").T
    return cfg, params


def to_hf(cfg: ModelConfig, params: Params) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """neo config + params -> HF GPT-Neo config dict + state dict (float32 numpy, contiguous, safetensors-ready)."""
    hf_config = config_to_hf(cfg)
    d = cfg.n_embd
    state: dict[str, np.ndarray] = {
        "transformer.wte.weight": params["wte"],
        "transformer.wpe.weight": params["pos"]["wpe"],
        "transformer.ln_f.weight": params["ln_f"]["scale"],
        "transformer.ln_f.bias": params["ln_f"]["bias"],
    }
    for i, block in enumerate(layer_params(cfg, params)):
        p = f"transformer.h.{i}."
        state[p + "ln_1.weight"], state[p + "ln_1.bias"] = block["ln_1"]["scale"], block["ln_1"]["bias"]
        state[p + "ln_2.weight"], state[p + "ln_2.bias"] = block["ln_2"]["scale"], block["ln_2"]["bias"]
        state[p + "mlp.c_fc.weight"] = np.asarray(block["mlp"]["c_fc"]).T
        state[p + "mlp.c_fc.bias"] = block["mlp"]["c_fc_bias"]
        state[p + "mlp.c_proj.weight"] = np.asarray(block["mlp"]["c_proj"]).T
        state[p + "mlp.c_proj.bias"] = block["mlp"]["c_proj_bias"]
        if "attn" in block:
            a = p + "attn.attention."
            for n in ("q", "k", "v"):
                state[a + f"{n}_proj.weight"] = np.asarray(block["attn"][n]).reshape(d, d).T
            state[a + "out_proj.weight"] = np.asarray(block["attn"]["o"]).reshape(d, d).T
            state[a + "out_proj.bias"] = block["attn"]["o_bias"]
    state["lm_head.weight"] = np.asarray(params["lm_head"]).T if cfg.no_weight_tie else params["wte"]
    return hf_config, {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in state.items()}
