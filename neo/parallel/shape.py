"""GPT-Neo `mesh_shape` strings (`x:16,y:8`): parsing and resolution against a device count.

Kept free of JAX so that a config typo fails in the first second, before any backend starts.
"""

from __future__ import annotations

import re

from neo.errors import ConfigError, LayoutError

DATA_AXIS = "data"  # the one axis of an empty mesh.shape: every device, pure data parallelism
_AXIS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_mesh_shape(text: str) -> list[tuple[str, int]]:
    """`"x:16,y:8"` -> `[("x", 16), ("y", 8)]`; an empty string -> `[]` (all devices on one `data` axis).

    At most one size may be -1, meaning "whatever the device count leaves over" (resolved by `resolve_mesh_shape`).
    """
    text = text.strip()
    if not text:
        return []
    axes: list[tuple[str, int]] = []
    for part in text.split(","):
        name, sep, size_text = part.strip().partition(":")
        name = name.strip()
        if not sep or not _AXIS_NAME.match(name):
            raise ConfigError(
                f"mesh.shape '{text}': '{part.strip()}' is not 'name:size'; write e.g. mesh.shape=x:16,y:8"
            )
        try:
            size = int(size_text)
        except ValueError:
            raise ConfigError(
                f"mesh.shape '{text}': size of axis '{name}' must be an integer, got '{size_text}'"
            ) from None
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.shape '{text}': axis '{name}' must have a positive size (or -1), got {size}")
        if name in (a for a, _ in axes):
            raise ConfigError(f"mesh.shape '{text}': axis '{name}' appears twice; give each mesh axis one name")
        axes.append((name, size))
    if sum(1 for _, s in axes if s == -1) > 1:
        raise ConfigError(f"mesh.shape '{text}': at most one axis may have size -1")
    return axes


def resolve_mesh_shape(text: str, n_devices: int) -> list[tuple[str, int]]:
    """The concrete axes for `n_devices` devices: fills in -1 and the empty default; raises if the count differs."""
    axes = parse_mesh_shape(text) or [(DATA_AXIS, -1)]
    known = 1
    for _, size in axes:
        if size != -1:
            known *= size
    if any(size == -1 for _, size in axes):
        if n_devices % known:
            raise LayoutError(
                f"mesh.shape '{text}' cannot fill {n_devices} devices: {n_devices} is not divisible by {known}"
            )
        axes = [(name, n_devices // known if size == -1 else size) for name, size in axes]
    elif known != n_devices:
        raise LayoutError(f"mesh.shape '{text}' needs {known} devices but {n_devices} are present")
    return axes


def format_mesh_shape(axes: list[tuple[str, int]]) -> str:
    """Inverse of `parse_mesh_shape`."""
    return ",".join(f"{name}:{size}" for name, size in axes)
