"""The sharded train state: its abstract shape, its shardings, and its creation on the mesh.

Parameters carry logical axis names from the model; the layout rules from neo/parallel turn them into mesh
shardings. Optimizer moments mirror the parameters and take their sharding; anything else in the optimizer state
(counters, Adafactor's factored rows/columns) is small and replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from neo.model.params import abstract_variables, init_variables
from neo.model.transformer import GPTNeo
from neo.parallel import layout as layout_lib
from neo.parallel.mesh import placement

State = dict[str, Any]  # {"step": int32[], "params": ..., "opt_state": ...}


@dataclass
class StateLayout:
    """Everything about the state that is known without allocating it."""

    abstract: State  # jax.ShapeDtypeStruct leaves, each with its sharding
    shardings: State  # NamedSharding leaves
    param_specs: Any  # logical PartitionSpecs of the params (for validation and display)


def _opt_shardings(opt_abstract: Any, params_abstract: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Give each optimizer leaf the sharding of the parameter it mirrors (same tree path suffix and shape)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    by_path = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params_abstract):
        by_path[jax.tree_util.keystr(path)] = leaf.shape
    shard_by_path = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(param_shardings)}

    def pick(path: tuple, leaf: Any) -> NamedSharding:
        for start in range(len(path)):
            key = jax.tree_util.keystr(path[start:])
            if key in by_path:
                return shard_by_path[key] if by_path[key] == leaf.shape else replicated
        return replicated

    return jax.tree_util.tree_map_with_path(pick, opt_abstract)


def state_layout(model: GPTNeo, tx: optax.GradientTransformation, mesh: Mesh, rules: Any) -> StateLayout:
    """Shapes and shardings of the full train state, by abstract evaluation (no allocation)."""
    boxed = abstract_variables(model.config, length=model.config.n_ctx)  # traced as the step runs: at n_ctx
    param_specs = nn.get_partition_spec(boxed["params"])
    param_shardings = layout_lib.shardings(boxed["params"], mesh, rules)  # validates the layout first
    params_abstract = nn.meta.unbox(boxed["params"])
    opt_abstract = jax.eval_shape(tx.init, params_abstract)
    shardings = {
        "step": NamedSharding(mesh, PartitionSpec()),
        "params": param_shardings,
        "opt_state": _opt_shardings(opt_abstract, params_abstract, param_shardings, mesh),
    }
    abstract_tree = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params_abstract, "opt_state": opt_abstract}
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings)
    return StateLayout(abstract=abstract, shardings=shardings, param_specs=param_specs)


def init_state(
    model: GPTNeo, tx: optax.GradientTransformation, layout: StateLayout, seed: int, mesh: Mesh, rules: Any
) -> State:
    """Create parameters and optimizer state directly in their shardings (never whole on one device)."""

    def create() -> State:
        params = nn.meta.unbox(init_variables(model.config, jax.random.key(seed), model.config.n_ctx)["params"])
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    with placement(mesh, rules):
        return jax.jit(create, out_shardings=layout.shardings)()
