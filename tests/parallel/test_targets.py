"""Which devices a layout compiles for: present ones, libtpu's ahead-of-time TPU compiler, or simulated CPUs."""

import importlib.util

import jax
import pytest

from neo.errors import LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.presets import preset, presets
from neo.parallel.targets import compiler_name, request_cpu_devices, target_devices

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install libtpu, Linux x86-64): the TPU compiler cannot run here",
)


@needs_libtpu
def test_every_tpu_preset_topology_is_one_libtpu_knows():
    """The preset's topology string, chip config and device count agree with libtpu's own description."""
    for name, cfg in presets().items():
        if cfg.platform != "tpu":
            continue
        devices, exact = target_devices(cfg)
        assert exact and len(devices) == cfg.devices, name
        assert devices[0].device_kind == cfg.device_kind, name
        assert "libtpu" in compiler_name(devices, exact), name


def test_without_libtpu_a_tpu_preset_compiles_on_simulated_cpus_and_says_so(monkeypatch):
    import neo.parallel.targets as targets_mod

    monkeypatch.setattr(targets_mod, "libtpu_version", lambda: None)
    devices, exact = target_devices(preset("v3-8"))
    assert not exact and devices[0].platform == "cpu"
    assert "simulated devices (an estimate" in compiler_name(devices, exact)


def test_target_devices_needs_enough_simulated_devices():
    with pytest.raises(LayoutError, match=r"xla_force_host_platform_device_count=256"):
        target_devices(MeshConfig(name="gpu-256", platform="gpu", devices=256))
    if importlib.util.find_spec("libtpu") is None:
        devices, exact = target_devices(MeshConfig(name="v3-8", platform="tpu", devices=8, topology="v3:2x2"))
        assert len(devices) == 8 and not exact and devices[0].platform == "cpu"


def test_request_cpu_devices_after_start_says_how_to_fix():
    jax.devices()
    request_cpu_devices(8)  # already there: fine
    with pytest.raises(LayoutError, match=r"xla_force_host_platform_device_count=512"):
        request_cpu_devices(512)
