"""The weighted cross-entropy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from neo.model.objectives import cross_entropy


def test_cross_entropy_weights() -> None:
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]]))
    targets = jnp.array([[0, 1]])
    assert float(cross_entropy(logits, targets, jnp.array([[1.0, 0.0]]))) == pytest.approx(np.log(2), rel=1e-6)
    assert float(cross_entropy(logits, targets)) == pytest.approx((np.log(2) - np.log(0.1)) / 2, rel=1e-6)
