"""`model.attention_impl`: the choice per platform, the one-line refusal, and the accelerator kernels' numerics on
this CPU (splash in Pallas interpret mode) against the xla reference."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.errors import ConfigError
from neo.model import kernels
from neo.model.kernels import splash, xla
from neo.parallel.config import MeshConfig
from neo.parallel.layout import layout_rules
from neo.parallel.mesh import make_mesh
from tests.model.conftest import params_for, small


@pytest.mark.parametrize(
    ("platform", "precision", "want"),
    [
        ("cpu", "float32", "cpu"),
        ("tpu", "bfloat16", "splash"),
        ("tpu", "float32", "splash"),
        ("gpu", "bfloat16", "cudnn"),
        ("gpu", "float32", "xla"),  # cuDNN takes no float32
        ("gpu", "auto", "cudnn"),  # model.precision=auto computes in bfloat16 on GPUs
        ("cpu", "auto", "cpu"),
    ],
)
def test_auto_resolves_per_platform(platform: str, precision: str, want: str) -> None:
    assert kernels.resolve("auto", platform, precision) == want


def test_an_explicit_choice_wins_where_it_can_run() -> None:
    assert kernels.resolve("xla", "tpu") == "xla" and kernels.resolve("xla", "cpu") == "xla"
    assert kernels.resolve("splash", "tpu") == "splash" and kernels.resolve("cudnn", "gpu", "bfloat16") == "cudnn"
    assert kernels.platform_of(type("D", (), {"platform": "cuda"})()) == "gpu"


@pytest.mark.parametrize(("impl", "platform"), [("cudnn", "cpu"), ("splash", "gpu"), ("cpu", "tpu")])
def test_a_kernel_the_devices_cannot_run_is_refused_in_one_line(impl: str, platform: str) -> None:
    with pytest.raises(ConfigError, match=f"attention_impl={impl} needs") as info:
        kernels.resolve(impl, platform)
    assert "\n" not in str(info.value) and "auto" in str(info.value)


def test_cudnn_on_this_cpu_exits_2_with_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from neo.cli.app import run

    assert run(["train", "--dry-run", "model=tiny", "mesh=cpu", "model.attention_impl=cudnn"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "attention_impl=cudnn needs GPU devices" in lines[0] and "Traceback" not in lines[0]


def _qkv(length: int, seed: int = 0, heads: int = 2, head_dim: int = 64):
    """q scaled as GPT-Neo's q initialiser scales it (std head_dim^-1/2 relative to k): softmax neither flat nor
    one-hot."""
    rng = np.random.default_rng(seed)
    q, k, v, d_out = (rng.standard_normal((2, length, heads, head_dim), dtype=np.float32) for _ in range(4))
    return jnp.asarray(q / np.sqrt(head_dim)), jnp.asarray(k), jnp.asarray(v), jnp.asarray(d_out)


def _mask(length: int, window: int | None) -> jax.Array:
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    mask = (j <= i) if window is None else (j <= i) & (i - j < window)
    return jnp.asarray(mask)[None]


def _value_and_grads(attend, q, k, v, d_out):
    return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.vdot(attend(q, k, v), d_out), argnums=(0, 1, 2)))(q, k, v)


def _splash_vs_xla(length: int, window: int | None, ref_window: int | None):
    q, k, v, d_out = _qkv(length)
    got = _value_and_grads(lambda q, k, v: splash.flash(q, k, v, window, interpret=True), q, k, v, d_out)
    mask = _mask(length, ref_window)
    want = _value_and_grads(lambda q, k, v: xla.attention(q, k, v, mask, ref_window, False), q, k, v, d_out)
    out_got = splash.flash(q, k, v, window, interpret=True)
    out_want = xla.attention(q, k, v, mask, ref_window, False)
    return [out_got, *got[1]], [out_want, *want[1]]


def _assert_equal(got, want) -> None:
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    ("length", "window"),
    [
        (256, None),
        (256, 256),  # local with a window of the whole block: every key row boundary inside one block
        (512, 128),
        pytest.param(1024, None, marks=pytest.mark.slow),
        pytest.param(1024, 256, marks=pytest.mark.slow),
        (512, None),
    ],
)
def test_splash_forward_and_gradients_equal_xla(length: int, window: int | None) -> None:
    """GPT-Neo semantics: no 1/sqrt(d) scaling; local = keys i-w+1 .. i. Forward, dq, dk, dv within 1e-5."""
    _assert_equal(*_splash_vs_xla(length, window, window))


@pytest.mark.parametrize("ref_window", [127, 129])
def test_an_off_by_one_window_fails_the_check(ref_window: int) -> None:
    with pytest.raises(AssertionError):
        _assert_equal(*_splash_vs_xla(256, 128, ref_window))


@pytest.mark.parametrize("impl", ["splash", "cpu"])
def test_the_model_trains_the_same_with_each_kernel_on_a_sharded_mesh(impl: str) -> None:
    """A whole global/local model under a 2x4 mesh (batch over x, heads over y): the splash kernel runs per device
    in shard_map; loss and every parameter gradient equal the xla kernels'."""
    cfg = small(n_ctx=128, window_size=40, n_layer=2, attention_types=[[["global", "local"], 1]])
    params = params_for(cfg)
    tokens = jnp.asarray(np.random.default_rng(7).integers(0, cfg.n_vocab, (4, cfg.n_ctx)))
    mesh = make_mesh(MeshConfig(shape="x:2,y:4"))
    rules = layout_rules("batch:x,heads:y", list(mesh.axis_names))

    def loss(c):
        from neo.model.transformer import GPTNeo

        model = GPTNeo(c)
        return jax.jit(jax.value_and_grad(lambda p: jnp.mean(jnp.tanh(model.apply({"params": p}, tokens)))))

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        want_loss, want = loss(dataclasses.replace(cfg, attention_impl="xla"))(params)
        got_loss, got = loss(dataclasses.replace(cfg, attention_impl=impl))(params)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-6)
    for g, w in zip(jax.tree.leaves(nn.meta.unbox(got)), jax.tree.leaves(nn.meta.unbox(want)), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-7)
