"""Mesh construction on the 8 simulated CPU devices, and peak FLOP/s / memory figures."""

import jax
import pytest
from jax.sharding import AxisType

from neo.errors import LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.flops import memory_per_device, peak_flops_per_device
from neo.parallel.mesh import make_mesh, mesh_and_rules, platform_mismatch
from neo.parallel.presets import preset


def test_cpu_preset_spans_every_local_device():
    mesh = make_mesh(preset("cpu"))
    assert dict(mesh.shape) == {"data": jax.device_count()}
    assert all(t == AxisType.Auto for t in mesh.axis_types)


def test_cpu_preset_works_on_one_device():
    mesh = make_mesh(preset("cpu"), devices=jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1}


def test_two_axis_shape():
    mesh = make_mesh(MeshConfig(shape="x:4,y:2"))
    assert dict(mesh.shape) == {"x": 4, "y": 2}
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())


def test_wrong_device_count_names_devices_present_and_presets_that_fit():
    with pytest.raises(LayoutError) as info:
        make_mesh(preset("v3-256"))
    msg = str(info.value)
    assert "\n" not in msg
    assert "needs 256 devices" in msg and "8 × cpu" in msg and "mesh=cpu-8" in msg and "mesh=cpu" in msg
    assert "--dry-run" in msg and "mesh=gpu" not in msg and "mesh=v3-8" not in msg  # only presets of this host's kind


def test_shape_that_does_not_fill_the_devices():
    with pytest.raises(LayoutError, match=r"needs 16 devices but 8 are present \(8 × cpu.*presets that fit"):
        make_mesh(MeshConfig(shape="x:4,y:4"))


def test_platform_mismatch_warning():
    assert platform_mismatch(preset("v3-8"), jax.devices()) is not None
    assert platform_mismatch(preset("cpu"), jax.devices()) is None


def test_peak_flops(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    assert peak_flops_per_device(preset("v3-256")) == pytest.approx(61.5e12)
    cpu = peak_flops_per_device(jax.devices())
    assert cpu > 1e6
    assert (tmp_path / "cpu_flops.json").is_file()
    assert peak_flops_per_device(preset("cpu")) == cpu  # cached, not re-measured

    class FakeTPU:
        device_kind = "TPU v5 lite"
        platform = "tpu"

    assert peak_flops_per_device([FakeTPU()]) == pytest.approx(197e12)


def test_memory_per_device():
    assert memory_per_device(preset("v3-8")) == 16 * 2**30
    assert memory_per_device(preset("cpu"), jax.devices()) is None


def test_mesh_and_rules_follow_the_preset_layout():
    mesh, rules = mesh_and_rules(MeshConfig(shape="x:4,y:2", layout="batch:x,intermediate_expanded:y"))
    assert dict(rules)["mlp"] == "y" and dict(rules)["batch"] == "x" and dict(mesh.shape) == {"x": 4, "y": 2}
    _, dp = mesh_and_rules(preset("cpu"))
    assert dict(dp)["batch"] == "data"
