"""Mesh presets and GPT-Neo mesh_shape strings."""

import pytest

from neo.errors import ConfigError, LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.presets import preset, presets, presets_for
from neo.parallel.shape import format_mesh_shape, parse_mesh_shape, resolve_mesh_shape

REQUIRED = ["cpu", "gpu-1", "gpu-8", "v2-8", "v3-8", "v3-32", "v3-256", "v3-512", "v3-1024", "v3-2048"]


def test_every_required_preset_exists_with_hardware_facts():
    table = presets()
    for name in REQUIRED:
        assert name in table
    assert any(n.startswith("v4") for n in table) and any(n.startswith("v5e") for n in table)
    assert any(n.startswith("v5p") for n in table)
    for name, cfg in table.items():
        assert cfg.name == name
        cfg.validate()
        if cfg.platform != "cpu":
            assert cfg.devices > 0 and cfg.memory_per_device > 0 and cfg.peak_flops_per_device > 0, name
            axes = resolve_mesh_shape(cfg.shape, cfg.devices)
            assert len(axes) <= 4


def test_tpu_presets_name_a_topology_with_the_right_device_count():
    v3 = preset("v3-256")
    assert v3.topology == "v3:8x16" and v3.devices == 256 and v3.memory_per_device == 16 * 2**30
    assert preset("v2-8").peak_flops_per_device == pytest.approx(22.5e12)


def test_parse_mesh_shape():
    assert parse_mesh_shape("x:16,y:8") == [("x", 16), ("y", 8)]
    assert parse_mesh_shape(" x:2 , y:-1 ") == [("x", 2), ("y", -1)]
    assert parse_mesh_shape("") == []
    assert format_mesh_shape([("x", 16), ("y", 8)]) == "x:16,y:8"


@pytest.mark.parametrize("bad", ["x16", "x:0", "x:a", "x:2,x:4", "x:-1,y:-1", "1x:2", "x:-3"])
def test_bad_mesh_shapes_fail_with_the_key_name(bad):
    with pytest.raises(ConfigError, match=r"mesh.shape"):
        parse_mesh_shape(bad)


def test_resolve_mesh_shape_fills_default_and_wildcard():
    assert resolve_mesh_shape("", 8) == [("data", 8)]
    assert resolve_mesh_shape("x:2,y:-1", 8) == [("x", 2), ("y", 4)]
    with pytest.raises(LayoutError, match=r"needs 16 devices but 8"):
        resolve_mesh_shape("x:4,y:4", 8)
    with pytest.raises(LayoutError, match=r"not divisible by 3"):
        resolve_mesh_shape("x:3,y:-1", 8)


def test_validate_checks_values_and_cross_fields():
    with pytest.raises(ConfigError, match=r"mesh.platform must be one of cpu, gpu, tpu"):
        MeshConfig(platform="ipu").validate()
    with pytest.raises(ConfigError, match=r"mesh.devices is 256"):
        MeshConfig(name="v3-256", devices=256, shape="x:16,y:8").validate()
    with pytest.raises(ConfigError, match=r"only meaningful with mesh.platform=tpu or gpu"):
        MeshConfig(topology="v3:8x16").validate()
    with pytest.raises(ConfigError, match=r"mesh axis 'z' is not in mesh.shape"):
        MeshConfig(shape="x:4,y:2", layout="batch:z").validate()
    MeshConfig(shape="x:4,y:2", layout="batch:x,heads:y").validate()
    with pytest.raises(ConfigError, match=r"mesh axis 'x' is not in mesh.shape \(axes: data\)"):
        MeshConfig(layout="batch:x").validate()
    MeshConfig(layout="batch:data").validate()


def test_presets_for_a_device_count():
    fits = presets_for(8)
    assert "cpu" in fits and "v3-8" in fits and "gpu-8" in fits and "v3-256" not in fits
    assert presets_for(256, "tpu") == [n for n in fits_256() if presets()[n].platform == "tpu"]


def fits_256():
    return [n for n, c in presets().items() if c.devices == 256]


def test_unknown_preset_names_the_options():
    with pytest.raises(ConfigError, match=r"available mesh= options: .*v3-256"):
        preset("v3-9")


def test_a_gpu_topology_is_slices_hosts_gpus_of_a_gpu_neo_can_describe():
    h100 = {"platform": "gpu", "device_kind": "H100", "devices": 16}
    MeshConfig(topology="1x2x8", **h100).validate()
    with pytest.raises(ConfigError, match=r"slices x hosts x GPUs per host, e.g. 1x1x8"):
        MeshConfig(topology="v3:4x4", **h100).validate()
    with pytest.raises(ConfigError, match=r"'1x1x8' has 8 GPUs but mesh.devices is 16"):
        MeshConfig(topology="1x1x8", **h100).validate()
    with pytest.raises(ConfigError, match=r"mesh.device_kind 'V100' names no GPU .* use one of H100, H200"):
        MeshConfig(topology="1x2x8", **{**h100, "device_kind": "V100"}).validate()
