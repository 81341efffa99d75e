"""GPT-Neo optimizer semantics: the schedule, decoupled weight decay and its exclusions, for both optimizers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neo.config import OptimizerConfig
from neo.train.optimizer import build_optimizer, decay_mask, learning_rate_schedule


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_warms_up_then_decays_to_a_tenth(decay: str) -> None:
    cfg = OptimizerConfig(lr=2.0, warmup_steps=10, lr_decay=decay, lr_decay_end=110)
    s = learning_rate_schedule(cfg, total_steps=500)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(1.0)
    assert float(s(10)) == pytest.approx(2.0)
    assert float(s(60)) == pytest.approx(1.1, rel=1e-5)  # both shapes cross the midpoint at the same value
    assert float(s(110)) == pytest.approx(0.2)
    assert float(s(400)) == pytest.approx(0.2)
    if decay == "cosine":
        assert float(s(35)) > 1.1 + 0.45  # cosine stays high longer than linear
    else:
        assert float(s(35)) == pytest.approx(1.55, rel=1e-5)


def test_decay_end_defaults_to_total_steps() -> None:
    s = learning_rate_schedule(OptimizerConfig(lr=1.0, warmup_steps=0, lr_decay="linear"), total_steps=100)
    assert float(s(100)) == pytest.approx(0.1)
    assert float(s(50)) == pytest.approx(0.55)


PARAMS = {
    "wte": {"embedding": jnp.ones((4, 3))},
    "h": {
        "ln_1": {"scale": jnp.ones((3,)), "bias": jnp.ones((3,))},
        "attn": {"q": {"kernel": jnp.ones((3, 3))}, "o": jnp.ones((3, 3)), "o_bias": jnp.ones((3,))},
    },
    "ln_f": {"scale": jnp.ones((3,)), "bias": jnp.ones((3,))},
}


def test_weight_decay_skips_biases_and_norm_gains() -> None:
    mask = decay_mask(PARAMS)
    assert mask["wte"]["embedding"] and mask["h"]["attn"]["q"]["kernel"] and mask["h"]["attn"]["o"]
    assert not mask["h"]["attn"]["o_bias"]
    assert not mask["h"]["ln_1"]["scale"] and not mask["h"]["ln_1"]["bias"]
    assert not mask["ln_f"]["scale"]


def test_adam_decay_is_decoupled_and_masked() -> None:
    cfg = OptimizerConfig(lr=0.1, warmup_steps=0, weight_decay=0.5, gradient_clipping=0.0)
    tx = build_optimizer(cfg, total_steps=10)
    zero_grads = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero_grads, tx.init(PARAMS), PARAMS)
    # with zero gradients only the decoupled decay moves a weight: -lr * wd * w
    np.testing.assert_allclose(updates["h"]["attn"]["q"]["kernel"], -0.05)
    np.testing.assert_allclose(updates["h"]["attn"]["o_bias"], 0.0)
    np.testing.assert_allclose(updates["ln_f"]["scale"], 0.0)


@pytest.mark.parametrize("name", ["adam", "adafactor"])
def test_both_optimizers_follow_the_schedule(name: str) -> None:
    cfg = OptimizerConfig(name=name, lr=1.0, warmup_steps=4, weight_decay=0.0, gradient_clipping=0.0, beta1=0.0)
    tx = build_optimizer(cfg, total_steps=8)
    params = {"w": jnp.ones((8, 8))}
    grads = {"w": jnp.full((8, 8), 0.5)}
    state = tx.init(params)
    sizes = []
    for _ in range(8):
        updates, state = tx.update(grads, state, params)
        sizes.append(float(jnp.abs(updates["w"]).mean()))
    assert sizes[0] == 0.0  # step 0 of the warmup has lr 0
    assert sizes[1] < sizes[2] < sizes[3]  # warming up
    assert sizes[4] > sizes[7]  # decaying


def test_gradients_are_clipped_by_global_norm_before_adam() -> None:
    import optax

    cfg = OptimizerConfig(lr=1.0, warmup_steps=0, weight_decay=0.0, gradient_clipping=1.0, beta1=0.9)
    tx = build_optimizer(cfg, total_steps=10)
    params = {"w": jnp.zeros((4,))}
    _, state = tx.update({"w": jnp.full((4,), 10.0)}, tx.init(params), params)
    mu = optax.tree_utils.tree_get(state, "mu")
    # first moment after one step = (1 - beta1) * clipped gradient; the clipped gradient has global norm 1
    np.testing.assert_allclose(mu["w"], 0.1 * 0.5, rtol=1e-6)


def test_adafactor_takes_beta1_as_momentum_and_its_epsilon() -> None:
    """Adafactor no longer ignores optimizer.beta1: 0 keeps it momentum-free (no first-moment state)."""
    params = {"w": jnp.ones((8, 8))}
    lean = build_optimizer(OptimizerConfig(name="adafactor", beta1=0.0), total_steps=8).init(params)
    momentum = build_optimizer(OptimizerConfig(name="adafactor", beta1=0.9), total_steps=8).init(params)
    count = lambda state: sum(x.size for x in jax.tree.leaves(state))
    assert count(momentum) >= count(lean) + 64  # a first moment per parameter
    cfg = OptimizerConfig(name="adafactor", beta1=0.0, adafactor_epsilon1=1.0, warmup_steps=0, gradient_clipping=0.0)
    tx = build_optimizer(cfg, total_steps=8)
    tiny = {"w": jnp.full((8, 8), 1e-3)}
    updates, _ = tx.update(tiny, tx.init(params), params)
    default = build_optimizer(dataclasses.replace(cfg, adafactor_epsilon1=1e-30), total_steps=8)
    updates_default, _ = default.update(tiny, default.init(params), params)
    assert float(jnp.abs(updates["w"]).max()) < float(jnp.abs(updates_default["w"]).max())  # eps damps small grads
