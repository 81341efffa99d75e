"""Shared by the ahead-of-time kernel tests (TPU: test_kernels_aot.py, GPU: test_kernels_gpu_aot.py)."""

from __future__ import annotations

from neo.config import compose
from neo.parallel.targets import target_devices
from neo.train.dry_run import _StepInContext, abstract_batch
from neo.train.session import build_session

# a 2-layer global/local model at n_ctx 256: one causal and one local attention kernel, forward and backward
GLOBAL_LOCAL = [
    "model=tiny",
    "model.n_ctx=256",
    "model.n_layer=2",
    'model.attention_types=[[["global","local"],1]]',
    "model.window_size=128",
    "model.n_vocab=512",
    "train.batch_size=16",
]


def compiled_text(overrides: list[str]) -> tuple[str, str]:
    """(the model's resolved attention_impl, the compiled train step's HLO), compiled by the target's own compiler
    ahead of time (libtpu for a TPU preset, XLA's GPU compiler for a GPU one)."""
    cfg = compose(overrides)
    devices, exact = target_devices(cfg.mesh)
    assert exact, f"expected the {cfg.mesh.platform.upper()} compiler, ahead of time"
    session = build_session(cfg, devices=devices)
    lowered = _StepInContext(session).lower(session.layout.abstract, abstract_batch(session))
    return session.model.config.attention_impl, lowered.compile().as_text()
