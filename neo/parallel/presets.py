"""The mesh presets shipped in `neo/conf/mesh/`, readable without composing Hydra (for error messages and search)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

from neo.errors import ConfigError
from neo.parallel.config import MeshConfig

MESH_CONF_DIR = Path(__file__).resolve().parent.parent / "conf" / "mesh"


@cache
def presets() -> dict[str, MeshConfig]:
    """Every preset by name, typed and validated."""
    out: dict[str, MeshConfig] = {}
    for path in sorted(MESH_CONF_DIR.glob("*.yaml")):
        merged = OmegaConf.merge(OmegaConf.structured(MeshConfig), OmegaConf.load(path))
        cfg = OmegaConf.to_object(merged)
        assert isinstance(cfg, MeshConfig)
        out[path.stem] = cfg
    return out


def preset(name: str) -> MeshConfig:
    """One preset by name (a fresh copy, safe to modify)."""
    import copy

    table = presets()
    if name not in table:
        raise ConfigError(f"unknown mesh preset '{name}'; available mesh= options: {', '.join(table)}")
    return copy.deepcopy(table[name])


def presets_for(n_devices: int, platform: str | None = None) -> list[str]:
    """Names of the presets that run on exactly `n_devices` devices (of `platform`, if given)."""
    return [
        name
        for name, cfg in presets().items()
        if (cfg.devices in (0, n_devices)) and (platform is None or cfg.platform == platform)
    ]
