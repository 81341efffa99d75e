"""Read an original GPT-Neo mesh-tensorflow checkpoint (and its JSON config) into neo.

Variables: gpt2/wte, gpt2/wpe, gpt2/h{i}/norm_{1,2}/{g,b}, gpt2/h{i}/attn/{q,k,v,o},
gpt2/h{i}/attn/compute_output_bias/o_b, gpt2/h{i}/mlp/conv1d_main/c_{fc,proj}/{kernel,bias}, gpt2/ln_f/{g,b}.
mtf stores kernels [in, out] with heads folded into one axis (heads-major); Adam slots and global_step are ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from neo.errors import CheckpointError, ConfigError
from neo.model.config import ModelConfig
from neo.model.params import Params, stack_layer_params

RENAMED = {"local_attention_radius": "window_size"}  # original keys whose neo name differs


def config_from_mtf(original: dict[str, Any], **overrides: Any) -> ModelConfig:
    """A GPT-Neo JSON config -> ModelConfig: model keys are kept, training keys belong to other configs."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"moe_params"}
    values = {RENAMED.get(k, k): v for k, v in original.items() if RENAMED.get(k, k) in fields}
    if "precision" in values and values["precision"] not in ("float32", "bfloat16"):
        values["precision"] = "float32"
    cfg = ModelConfig(**{**values, **overrides})
    cfg.validate()
    return cfg


def _reader(prefix: str) -> Any:
    import tensorflow as tf

    try:
        return tf.train.load_checkpoint(prefix)
    except Exception as exc:  # tf raises several types for a missing/corrupt checkpoint
        raise CheckpointError(f"cannot read a TensorFlow checkpoint at {prefix}: {exc}".splitlines()[0]) from None


def from_mtf(ckpt_prefix: str, original_config: dict[str, Any], **overrides: Any) -> tuple[ModelConfig, Params]:
    cfg = config_from_mtf(original_config, **overrides)
    unsupported = [k for k in ("num_mem_kv", "axial_pos_emb", "rotary_emb", "mlp_glu", "moe_layers") if getattr(cfg, k)]
    if unsupported or cfg.scalenorm or cfg.rezero or cfg.macaron or cfg.no_weight_tie:
        raise ConfigError("from-mtf reads plain GPT-Neo checkpoints only; this config uses options it cannot map yet")
    reader = _reader(ckpt_prefix)
    names = set(reader.get_variable_to_shape_map())
    d, h, hd = cfg.n_embd, cfg.n_head, cfg.head_dim

    def take(name: str) -> np.ndarray:
        full = f"gpt2/{name}"
        if full not in names:
            raise CheckpointError(
                f"the checkpoint has no variable '{full}'; is it a GPT-Neo checkpoint of this config?"
            )
        return np.asarray(reader.get_tensor(full), np.float32)

    layers = []
    for i, kind in enumerate(cfg.layer_types()):
        p = f"h{i}/"
        block: Params = {
            "ln_2": {"scale": take(p + "norm_2/g"), "bias": take(p + "norm_2/b")},
            "mlp": {
                "c_fc": take(p + "mlp/conv1d_main/c_fc/kernel").reshape(d, -1),
                "c_fc_bias": take(p + "mlp/conv1d_main/c_fc/bias"),
                "c_proj": take(p + "mlp/conv1d_main/c_proj/kernel").reshape(-1, d),
                "c_proj_bias": take(p + "mlp/conv1d_main/c_proj/bias"),
            },
        }
        if kind != "none":
            block["ln_1"] = {"scale": take(p + "norm_1/g"), "bias": take(p + "norm_1/b")}
            block["attn"] = {n: take(p + f"attn/{n}").reshape(d, h, hd) for n in ("q", "k", "v")}
            block["attn"]["o"] = take(p + "attn/o").reshape(h, hd, d)
            block["attn"]["o_bias"] = take(p + "attn/compute_output_bias/o_b")
        layers.append(block)
    params: Params = {
        "wte": take("wte"),
        "pos": {"wpe": take("wpe")},
        "ln_f": {"scale": take("ln_f/g"), "bias": take("ln_f/b")},
        **stack_layer_params(cfg, layers),
    }
    return cfg, params
