"""GPT-Neo mesh-tensorflow checkpoints: a checkpoint written here with TensorFlow under the original names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neo.errors import CheckpointError
from neo.model.mtf import from_mtf
from neo.model.params import layer_params
from tests.model.conftest import logits_fn

ORIGINAL = {
    "n_vocab": 53, "n_ctx": 32, "n_embd": 32, "n_head": 4, "n_layer": 2, "attention_types": [[["global", "local"], 1]],
    "local_attention_radius": 3, "precision": "bfloat16", "lr": 6e-4, "train_batch_size": 8,
    "activation_function": "gelu",
}  # fmt: skip


def _write_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    tf = pytest.importorskip("tensorflow")
    rng = np.random.RandomState(0)
    d, m = 32, 128
    shapes = {"gpt2/wte": (53, d), "gpt2/wpe": (32, d), "gpt2/ln_f/g": (d,), "gpt2/ln_f/b": (d,)}
    for i in range(2):
        p = f"gpt2/h{i}/"
        shapes |= {p + "norm_1/g": (d,), p + "norm_1/b": (d,), p + "norm_2/g": (d,), p + "norm_2/b": (d,)}
        shapes |= {p + f"attn/{n}": (d, d) for n in "qkvo"} | {p + "attn/compute_output_bias/o_b": (d,)}
        c = p + "mlp/conv1d_main/"
        shapes |= {
            c + "c_fc/kernel": (d, m),
            c + "c_fc/bias": (m,),
            c + "c_proj/kernel": (m, d),
            c + "c_proj/bias": (d,),
        }
    values = {name: (rng.normal(size=shape) * 0.1).astype(np.float32) for name, shape in shapes.items()}
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=k) for k, v in values.items()]
        variables.append(tf.compat.v1.Variable(np.zeros((53, 32), np.float32), name="gpt2/wte/adam_m"))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(sess, str(prefix))
    return values


def test_from_mtf_maps_every_variable(tmp_path: Path) -> None:
    values = _write_checkpoint(tmp_path / "model.ckpt-1000")
    cfg, params = from_mtf(str(tmp_path / "model.ckpt-1000"), ORIGINAL)
    assert (cfg.n_layer, cfg.window_size, cfg.precision, cfg.layer_types()) == (2, 3, "bfloat16", ["global", "local"])
    np.testing.assert_array_equal(params["wte"], values["gpt2/wte"])
    layer = layer_params(cfg, params)[1]
    np.testing.assert_array_equal(layer["attn"]["q"].reshape(32, 32), values["gpt2/h1/attn/q"])
    np.testing.assert_array_equal(layer["attn"]["o"].reshape(32, 32), values["gpt2/h1/attn/o"])
    np.testing.assert_array_equal(layer["mlp"]["c_proj"], values["gpt2/h1/mlp/conv1d_main/c_proj/kernel"])
    np.testing.assert_array_equal(layer["ln_1"]["scale"], values["gpt2/h1/norm_1/g"])
    fp32 = cfg.__class__(**{**cfg.__dict__, "precision": "float32"})
    logits = np.asarray(logits_fn(fp32)(params, np.zeros((1, 8), np.int32)))
    assert logits.shape == (1, 8, 53) and np.isfinite(logits).all()


def test_from_mtf_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        from_mtf(str(tmp_path / "nothing"), ORIGINAL)
