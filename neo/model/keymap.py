"""Declarative maps between neo's parameter tree and another format's flat tensor names.

A format is three tables of `Key`s: the model's own tensors, an attention layer's and an MLP's. A key says where a
tensor lives in neo's tree (a `/` path, inside the layer for layer keys), its name in the other format (`{i}` stands
for the layer index) and the named `Layout` that turns their array into neo's and back. Readers and writers walk the
tables, so a format's mapping is written once, as data, and read and write cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flax import traverse_util

from neo.model.config import ModelConfig
from neo.model.params import Params, layer_params, stack_layer_params

Array = np.ndarray
Convert = Callable[[Array, ModelConfig], Array]


@dataclass(frozen=True)
class Layout:
    """How a tensor's array in the other format becomes neo's (`to_neo`) and back (`from_neo`)."""

    name: str
    to_neo: Convert
    from_neo: Convert


AS_IS = Layout("as is", lambda a, c: a, lambda a, c: a)
LINEAR = Layout("[out, in] <-> [in, out]", lambda a, c: a.T, lambda a, c: a.T)
LINEAR_TO_HEADS = Layout(
    "[heads*head_dim, embd] <-> [embd, heads, head_dim]",
    lambda a, c: a.T.reshape(c.n_embd, c.n_head, c.head_dim),
    lambda a, c: a.reshape(c.n_embd, -1).T,
)
LINEAR_FROM_HEADS = Layout(
    "[embd, heads*head_dim] <-> [heads, head_dim, embd]",
    lambda a, c: a.T.reshape(c.n_head, c.head_dim, c.n_embd),
    lambda a, c: a.reshape(-1, c.n_embd).T,
)
SPLIT_HEADS_IN = Layout(
    "[embd, heads*head_dim] <-> [embd, heads, head_dim]",
    lambda a, c: a.reshape(c.n_embd, c.n_head, c.head_dim),
    lambda a, c: a.reshape(c.n_embd, -1),
)
SPLIT_HEADS_OUT = Layout(
    "[heads*head_dim, embd] <-> [heads, head_dim, embd]",
    lambda a, c: a.reshape(c.n_head, c.head_dim, c.n_embd),
    lambda a, c: a.reshape(-1, c.n_embd),
)
MATRIX_IN = Layout("[embd, ...] <-> [embd, out]", lambda a, c: a.reshape(c.n_embd, -1), lambda a, c: a)
MATRIX_OUT = Layout("[..., embd] <-> [in, embd]", lambda a, c: a.reshape(-1, c.n_embd), lambda a, c: a)


@dataclass(frozen=True)
class Key:
    """One tensor: its path in neo's tree, its name in the other format, and the layout between them."""

    neo: str
    theirs: str
    layout: Layout = AS_IS


@dataclass(frozen=True)
class Format:
    """A format's whole mapping. `attention` keys exist only in layers whose type is not "none"."""

    model: tuple[Key, ...]
    attention: tuple[Key, ...]
    mlp: tuple[Key, ...]

    def read(self, cfg: ModelConfig, take: Callable[[str], Array]) -> Params:
        """neo params (float32 numpy; scanned or unrolled as `cfg` says) from `take(name)`, the other format's
        tensor of that name (which raises the caller's error when it is missing)."""

        def tree(keys: tuple[Key, ...], i: int | None = None) -> Params:
            flat = {k.neo: k.layout.to_neo(np.asarray(take(k.theirs.format(i=i)), np.float32), cfg) for k in keys}
            return traverse_util.unflatten_dict(flat, sep="/")

        layers = [
            tree(self.mlp + (self.attention if kind != "none" else ()), i) for i, kind in enumerate(cfg.layer_types())
        ]
        return {**tree(self.model), **stack_layer_params(cfg, layers)}

    def write(self, cfg: ModelConfig, params: Params) -> dict[str, Array]:
        """The other format's tensors (float32, contiguous) from neo params; layer keys whose tensor the layer does
        not have (no attention) are left out."""
        out: dict[str, Array] = {}

        def emit(tree: Params, keys: tuple[Key, ...], i: int | None = None) -> None:
            flat = traverse_util.flatten_dict(tree, sep="/")
            for key in keys:
                if key.neo in flat:
                    array = key.layout.from_neo(np.asarray(flat[key.neo], np.float32), cfg)
                    out[key.theirs.format(i=i)] = np.ascontiguousarray(array)

        emit(params, self.model)
        for i, layer in enumerate(layer_params(cfg, params)):
            emit(layer, self.attention + self.mlp, i)
        return out
