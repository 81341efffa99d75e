"""Read an original GPT-Neo mesh-tensorflow checkpoint (and its JSON config) into neo.

The variables it reads are the `MTF` table below (`neo.model.keymap`); Adam slots and global_step are ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from neo.errors import CheckpointError, ConfigError
from neo.model.config import ModelConfig
from neo.model.keymap import MATRIX_IN, MATRIX_OUT, SPLIT_HEADS_IN, SPLIT_HEADS_OUT, Format, Key
from neo.model.params import Params

# Variable names under the "gpt2/" scope; kernels come as [in, out] with heads folded into one axis.
MTF = Format(
    model=(Key("wte", "wte"), Key("pos/wpe", "wpe"), Key("ln_f/scale", "ln_f/g"), Key("ln_f/bias", "ln_f/b")),
    attention=(
        Key("ln_1/scale", "h{i}/norm_1/g"),
        Key("ln_1/bias", "h{i}/norm_1/b"),
        Key("attn/q", "h{i}/attn/q", SPLIT_HEADS_IN),
        Key("attn/k", "h{i}/attn/k", SPLIT_HEADS_IN),
        Key("attn/v", "h{i}/attn/v", SPLIT_HEADS_IN),
        Key("attn/o", "h{i}/attn/o", SPLIT_HEADS_OUT),
        Key("attn/o_bias", "h{i}/attn/compute_output_bias/o_b"),
    ),
    mlp=(
        Key("ln_2/scale", "h{i}/norm_2/g"),
        Key("ln_2/bias", "h{i}/norm_2/b"),
        Key("mlp/c_fc", "h{i}/mlp/conv1d_main/c_fc/kernel", MATRIX_IN),
        Key("mlp/c_fc_bias", "h{i}/mlp/conv1d_main/c_fc/bias"),
        Key("mlp/c_proj", "h{i}/mlp/conv1d_main/c_proj/kernel", MATRIX_OUT),
        Key("mlp/c_proj_bias", "h{i}/mlp/conv1d_main/c_proj/bias"),
    ),
)
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

    def take(name: str) -> np.ndarray:
        full = f"gpt2/{name}"
        if full not in names:
            raise CheckpointError(
                f"the checkpoint has no variable '{full}'; is it a GPT-Neo checkpoint of this config?"
            )
        return reader.get_tensor(full)

    return cfg, MTF.read(cfg, take)
