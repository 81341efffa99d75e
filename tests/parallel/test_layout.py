"""GPT-Neo layout strings -> logical rules, and the per-tensor checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from neo.errors import ConfigError, LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.layout import (
    LOGICAL_AXES,
    LogicalShape,
    format_layout,
    layout_rules,
    parse_layout,
    shardings,
    validate_layout,
)
from neo.parallel.mesh import make_mesh


def test_mesh_tf_names_map_to_neo_names():
    assert parse_layout("batch:x,memory_length:y,intermediate_expanded:y") == {
        "batch": ("x",),
        "length": ("y",),
        "mlp": ("y",),
    }
    assert parse_layout("features_per_head:x,embed_sequence:y") == {"kv": ("x",), "length": ("y",)}


def test_rules_cover_every_logical_name_once():
    rules = layout_rules("batch:x,heads:y", ["x", "y"])
    assert [name for name, _ in rules] == list(LOGICAL_AXES)
    table = dict(rules)
    assert table["batch"] == "x" and table["heads"] == "y" and table["window"] is None and table["vocab"] is None


def test_empty_layout_is_data_parallel_over_every_axis():
    assert dict(layout_rules("", ["x", "y"]))["batch"] == ("x", "y")
    assert dict(layout_rules("", ["data"]))["batch"] == "data"
    assert format_layout(layout_rules("", ["x", "y"])) == "batch:x+y"
    assert dict(layout_rules("batch:x+y", ["x", "y"]))["batch"] == ("x", "y")


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ("batch:x,batch:y", "'batch' is on more than one mesh axis.*batch:x\\+y"),
        ("sequence:x,memory_length:y", "'length' is on more than one mesh axis"),
        ("tokens:x", "unknown tensor dimension 'tokens'"),
        ("batch:z", "mesh axis 'z' is not in mesh.shape"),
        ("batch", "is not 'dimension:mesh_axis'"),
        ("batch:x+x", "names a mesh axis twice"),
    ],
)
def test_bad_layouts_fail_in_one_line(layout, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_layout(layout, ["x", "y"])
    assert "\n" not in str(info.value)


def test_same_axis_for_two_aliases_of_one_name_is_fine():
    assert parse_layout("sequence:y,memory_length:y") == {"length": ("y",)}


class Tiny(nn.Module):
    """A model in the shape neo's layers use: logically partitioned kernels."""

    vocab: int = 64
    embd: int = 16
    heads: int = 4

    @nn.compact
    def __call__(self, ids):
        init = nn.initializers.normal(0.02)
        wte = self.param("wte", nn.with_logical_partitioning(init, ("vocab", "embd")), (self.vocab, self.embd))
        q = self.param("q", nn.with_logical_partitioning(init, ("embd", "heads", "kv")), (self.embd, self.heads, 4))
        x = wte[ids]
        return jnp.einsum("ble,ehk->blhk", x, q)


def _abstract_params(**kw):
    return jax.eval_shape(Tiny(**kw).init, jax.random.key(0), jnp.zeros((8, 4), jnp.int32))["params"]


def test_valid_layout_passes_and_gives_named_shardings():
    mesh = make_mesh(MeshConfig(shape="x:4,y:2"))
    rules = layout_rules("batch:x,heads:y,vocab:x", ["x", "y"])
    params = _abstract_params()
    validate_layout(params, mesh, rules)
    sh = shardings(params, mesh, rules)
    assert sh["wte"].spec == jax.sharding.PartitionSpec("x", None)
    assert sh["q"].spec == jax.sharding.PartitionSpec(None, "y", None)


def test_mesh_axis_twice_in_one_tensor():
    rules = layout_rules("embd:y,heads:y", ["x", "y"])
    with pytest.raises(LayoutError, match=r"^q .*mesh axis 'y' is used twice in one tensor \('embd' and 'heads'\)"):
        validate_layout(_abstract_params(), {"x": 4, "y": 2}, rules)


def test_gpt_neo_memory_length_with_embd_conflicts_on_activations():
    rules = layout_rules("batch:x,memory_length:y,embd:y", ["x", "y"])
    act = {"hidden": LogicalShape((8, 16, 32), ("batch", "length", "embd"))}
    with pytest.raises(LayoutError, match=r"hidden.*'y' is used twice"):
        validate_layout(act, {"x": 4, "y": 2}, rules)


def test_sizes_not_divisible_by_mesh_axes():
    rules = layout_rules("heads:x", ["x", "y"])
    with pytest.raises(LayoutError, match=r"q \(16, 3, 4\): dimension 'heads' of size 3 is not divisible .*x=4"):
        validate_layout(_abstract_params(heads=3), {"x": 4, "y": 2}, rules)
    batch_rules = layout_rules("", ["x", "y"])
    with pytest.raises(LayoutError, match=r"'batch' of size 6 .*x=4×y=2"):
        validate_layout({"tokens": LogicalShape((6, 16), ("batch", "length"))}, {"x": 4, "y": 2}, batch_rules)


def test_shape_dtype_structs_with_a_names_tree():
    tree = {"a": jax.ShapeDtypeStruct((8, 6), jnp.float32)}
    names = {"a": ("embd", "mlp")}
    validate_layout(tree, {"x": 4, "y": 2}, layout_rules("embd:x,mlp:y", ["x", "y"]), names=names)
    with pytest.raises(LayoutError, match=r"'mlp' of size 6"):
        validate_layout(tree, {"x": 4, "y": 2}, layout_rules("embd:y,mlp:x", ["x", "y"]), names=names)
