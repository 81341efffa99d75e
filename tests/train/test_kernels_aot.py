"""The accelerator kernels compile for the real chips: train steps AOT-compiled by libtpu for TPU topologies (no TPU
needed), with the splash kernels in the program where `model.attention_impl` says so."""

from __future__ import annotations

import importlib.util

import pytest

from neo.config import compose
from neo.model.kernels import splash
from neo.train.dry_run import dry_run
from tests.train.aot_common import GLOBAL_LOCAL, compiled_text

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install libtpu, Linux x86-64): the TPU compiler cannot run here",
)
SMALL = [*GLOBAL_LOCAL, "model.precision=bfloat16"]


@needs_libtpu
@pytest.mark.parametrize("mesh", ["v3-8", "v5e-8"])
def test_auto_compiles_splash_kernels_into_a_tpu_train_step(mesh: str) -> None:
    impl, hlo = compiled_text([*SMALL, f"mesh={mesh}"])
    assert impl == "splash"
    assert hlo.count("tpu_custom_call") >= 4  # causal and local kernels, forward and backward (dq, dkv)


@needs_libtpu
def test_xla_on_a_tpu_has_no_custom_kernels() -> None:
    impl, hlo = compiled_text([*SMALL, "mesh=v5e-8", "model.attention_impl=xla"])
    assert impl == "xla" and "tpu_custom_call" not in hlo


@needs_libtpu
def test_v3_splash_takes_float32_operands_because_bf16_does_not_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured: libtpu's Mosaic compiler for v3 rejects the bf16 splash kernels; the float32 ones compile."""
    monkeypatch.setattr(splash, "FLOAT32_OPERANDS_ON", ())
    with pytest.raises(Exception, match="Unsupported matmul RHS type"):  # Mosaic: vector<128x128xbf16> on v3
        compiled_text([*SMALL, "mesh=v3-8"])


@pytest.mark.slow
@needs_libtpu
@pytest.mark.parametrize("mesh", ["v4-8", "v5e-8", "v5p-8", "v6e-8", "v3-8"])
def test_gpt3_xl_train_step_with_splash_compiles_for_each_tpu_generation(mesh: str) -> None:
    """Fully sharded (`batch:x,embd:x`): replicated, gpt3_xl's 21 GB of params and Adam state exceed a 16 GiB chip."""
    overrides = ["model=gpt3_xl", f"mesh={mesh}", "mesh.layout=batch:x,embd:x", "train.batch_size=8"]
    report = dry_run(compose([*overrides, "model.attention_impl=splash"]))
    assert report.exact and "TPU compiler (libtpu" in report.compiler and not report.error, report.summary()
    assert report.fits and report.temp_bytes > 0, report.summary()
