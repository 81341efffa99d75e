"""GPT-Neo layout strings -> flax logical-axis rules, and the checks that make a bad layout fail at start.

A layout says which mesh axis splits each *logical* tensor dimension: `batch:x,heads:y`. The model annotates every
parameter and activation with logical names (below); only this module turns them into mesh axes. The rules are
plain `(logical_name, mesh_axis | tuple | None)` pairs for `flax.linen.logical_axis_rules` /
`nn.logical_to_mesh_sharding`, with exactly one rule per logical name, so no dimension silently falls back to a
second choice.

Logical names (neo)  ·  mesh-tf / GPT-Neo names accepted in layout strings
- `batch`         examples in a batch                              · batch
- `length`        sequence positions of the queries and residual   · sequence, embed_sequence (wpe rows)
- `memory_length` positions of the keys/values attention reads     · memory_length
                  (k, v, the KV cache's slots, a local layer's window ring)
- `embd`          model width                                      · embd
- `heads`         attention heads                                  · heads
- `kv`            features per head                                · kv, features_per_head
- `mlp`           MLP hidden width (4·embd)                        · intermediate_expanded, expert_hidden
- `vocab`         vocabulary                                       · vocab
- `layers`        the scanned layer stack                          · (none in GPT-Neo)
- `experts`       mixture-of-experts experts                       · experts
- `window`        local-attention window                           · (none in GPT-Neo)
A name the layout does not mention is replicated. `memory_length` is its own name, as in mesh-tf: keys and values
are computed from the residual (`embd` contracted away), so GPT-Neo's XL/13B layout `batch:x,memory_length:y,embd:y`
splits the keys' length and the model width over the same axis without a tensor carrying both.

Neo extension: `batch:x+y` splits one dimension over several mesh axes (the default data-parallel layout does this).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neo.errors import ConfigError, LayoutError

LOGICAL_AXES: tuple[str, ...] = (
    "batch",
    "length",
    "memory_length",
    "embd",
    "heads",
    "kv",
    "mlp",
    "vocab",
    "layers",
    "experts",
    "window",
)

# mesh-tf dimension names used by GPT-Neo configs -> neo logical names.
MESH_TF_ALIASES: dict[str, str] = {
    "sequence": "length",
    "embed_sequence": "length",
    "features_per_head": "kv",
    "intermediate_expanded": "mlp",
    "expert_hidden": "mlp",
}

Rule = tuple[str, "str | tuple[str, ...] | None"]
Rules = tuple[Rule, ...]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _canonical(name: str, text: str) -> str:
    if name in LOGICAL_AXES:
        return name
    if name in MESH_TF_ALIASES:
        return MESH_TF_ALIASES[name]
    known = ", ".join([*LOGICAL_AXES, *MESH_TF_ALIASES])
    raise ConfigError(f"mesh.layout '{text}': unknown tensor dimension '{name}'; use one of: {known}")


def parse_layout(text: str, mesh_axes: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """`"batch:x,heads:y"` -> `{"batch": ("x",), "heads": ("y",)}`, with mesh-tf names mapped to neo's.

    Raises ConfigError for unknown names, a dimension given two different mesh axes (`batch:x,batch:y` — write
    `batch:x+y`), a mesh axis repeated within one entry, or (when `mesh_axes` is given) an axis the mesh lacks.
    """
    out: dict[str, tuple[str, ...]] = {}
    source: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        raw_name, sep, axes_text = part.partition(":")
        raw_name = raw_name.strip()
        axes = tuple(a.strip() for a in axes_text.split("+"))
        if not sep or not raw_name or not all(_NAME.match(a) for a in axes):
            raise ConfigError(
                f"mesh.layout '{text}': '{part}' is not 'dimension:mesh_axis'; write e.g. batch:x,heads:y"
            )
        name = _canonical(raw_name, text)
        if len(set(axes)) != len(axes):
            raise ConfigError(f"mesh.layout '{text}': '{part}' names a mesh axis twice; list each axis once")
        if mesh_axes is not None:
            for axis in axes:
                if axis not in mesh_axes:
                    raise ConfigError(
                        f"mesh.layout '{text}': mesh axis '{axis}' is not in mesh.shape (axes: {', '.join(mesh_axes)})"
                    )
        if name in out and out[name] != axes:
            raise ConfigError(
                f"mesh.layout '{text}': tensor dimension '{name}' is on more than one mesh axis "
                f"({source[name]} and {part}); keep one, or write {name}:{'+'.join(out[name] + axes)} "
                "to split it over both"
            )
        out[name] = axes
        source[name] = part
    return out


def layout_rules(text: str, mesh_axes: Sequence[str]) -> Rules:
    """Flax logical-axis rules for a layout on a mesh with `mesh_axes`: one rule per logical name.

    An empty layout is pure data parallelism: `batch` over every mesh axis, everything else replicated.
    """
    mapping = parse_layout(text, mesh_axes) if text.strip() else {"batch": tuple(mesh_axes)}
    rules: list[Rule] = []
    for name in LOGICAL_AXES:
        axes = mapping.get(name, ())
        rules.append((name, None if not axes else axes[0] if len(axes) == 1 else tuple(axes)))
    return tuple(rules)


def format_layout(rules: Iterable[Rule]) -> str:
    """Rules -> a neo layout string (the inverse of `layout_rules` for the mapped names)."""
    parts = []
    for name, axes in rules:
        if axes is None:
            continue
        parts.append(f"{name}:{axes if isinstance(axes, str) else '+'.join(axes)}")
    return ",".join(parts)


@dataclass(frozen=True)
class LogicalShape:
    """A tensor known only by its shape and logical names (e.g. an activation the trainer wants checked)."""

    shape: tuple[int, ...]
    names: tuple[str | None, ...]


def _mesh_axes_of(axes: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def mesh_ways(axes: str | tuple[str, ...] | None, mesh_shape: Mapping[str, int]) -> int:
    """How many ways `axes` split a dimension: the product of their sizes in `mesh_shape`.

    `axes` is what a rule maps a logical name to, or one entry of a PartitionSpec: a mesh axis, several, or None.
    """
    return math.prod(mesh_shape[a] for a in _mesh_axes_of(axes))


def axis_ways(name: str, rules: Iterable[Rule] | None, mesh_shape: Mapping[str, int]) -> int:
    """How many ways the logical axis `name` is split over a mesh of `mesh_shape` under `rules` (1: replicated).

    E.g. the data-parallel replicas are `axis_ways("batch", rules, mesh.shape)`. `rules` may also be the items of a
    `parse_layout` mapping.
    """
    return mesh_ways(dict(rules or ()).get(name), mesh_shape)


def check_tensor(
    path: str, shape: Sequence[int], names: Sequence[str | None], mesh_shape: Mapping[str, int], rules: Rules
) -> None:
    """Raise LayoutError if one mesh axis splits two dimensions of this tensor, or a size does not divide."""
    if len(shape) != len(names):
        raise LayoutError(f"{path}: {len(names)} logical names {tuple(names)} for a tensor of rank {len(shape)}")
    table = dict(rules)
    used: dict[str, str] = {}
    for size, name in zip(shape, names, strict=True):
        axes = _mesh_axes_of(table.get(name)) if name is not None else ()
        for axis in axes:
            if axis not in mesh_shape:
                raise LayoutError(f"{path}: layout maps '{name}' to mesh axis '{axis}', which the mesh lacks")
            if axis in used:
                raise LayoutError(
                    f"{path} {tuple(names)}: mesh axis '{axis}' is used twice in one tensor ('{used[axis]}' and "
                    f"'{name}'); map only one of them to '{axis}' in mesh.layout{_length_hint(used[axis], name)}"
                )
            used[axis] = str(name)
        parts = mesh_ways(axes, mesh_shape)
        if size % parts:
            split = "×".join(f"{a}={mesh_shape[a]}" for a in axes)
            raise LayoutError(
                f"{path} {tuple(shape)}: dimension '{name}' of size {size} is not divisible by its mesh axes "
                f"({split}); change mesh.layout or mesh.shape, or make the size a multiple of {parts}"
            )


def _length_hint(*names: Any) -> str:
    if "length" in names:
        return " (GPT-Neo's sequence and embed_sequence are both neo's length)"
    return ""


def _leaves_with_names(tree: Any, names: Any | None) -> list[tuple[str, tuple[int, ...], tuple[str | None, ...]]]:
    import jax
    from flax.core import meta

    def is_leaf(x: Any) -> bool:
        return isinstance(x, meta.Partitioned | LogicalShape)

    out = []
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    flat_names = None
    if names is not None:
        is_names = lambda x: isinstance(x, tuple | jax.sharding.PartitionSpec)
        flat_names = jax.tree_util.tree_leaves(names, is_leaf=is_names)
        if len(flat_names) != len(flat):
            raise LayoutError(
                f"{len(flat_names)} name tuples for {len(flat)} tensors; pass names with the same structure"
            )
    for i, (key_path, leaf) in enumerate(flat):
        path = _path_str(key_path)
        if isinstance(leaf, LogicalShape):
            out.append((path, tuple(leaf.shape), tuple(leaf.names)))
        elif isinstance(leaf, meta.Partitioned):
            out.append((path, tuple(leaf.value.shape), tuple(leaf.names)))
        elif flat_names is not None:
            out.append((path, tuple(leaf.shape), tuple(flat_names[i])))
        else:
            out.append((path, tuple(leaf.shape), (None,) * len(leaf.shape)))  # unannotated: replicated
    return out


def _path_str(key_path: Sequence[Any]) -> str:
    parts = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    parts = [p for p in parts if p != "value"]  # the Partitioned box itself is not part of the name
    return "/".join(parts) or "<root>"


def validate_layout(tree: Any, mesh: Any, rules: Rules, names: Any | None = None) -> None:
    """Check every tensor of `tree` against `rules` on `mesh` (a jax Mesh or a {axis: size} mapping).

    `tree` holds `nn.LogicallyPartitioned` boxes (e.g. `jax.eval_shape(model.init, ...)`), `LogicalShape`s, or
    `jax.ShapeDtypeStruct`/arrays with a matching `names` tree of logical-name tuples. Raises LayoutError naming the
    first bad tensor: one mesh axis on two of its dimensions, or a dimension not divisible by its mesh axes.
    """
    mesh_shape = dict(mesh.shape) if hasattr(mesh, "shape") and not isinstance(mesh, Mapping) else dict(mesh)
    for path, shape, leaf_names in _leaves_with_names(tree, names):
        check_tensor(path, shape, leaf_names, mesh_shape, rules)


def shardings(tree: Any, mesh: Any, rules: Rules) -> Any:
    """NamedShardings for a tree of `nn.LogicallyPartitioned` boxes (validated first)."""
    import flax.linen as nn

    validate_layout(tree, mesh, rules)
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)
