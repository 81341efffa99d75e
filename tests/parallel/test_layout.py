"""GPT-Neo layout strings -> logical rules, and the per-tensor checks."""

import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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
from neo.parallel.shape import parse_mesh_shape

GPTNEO_CONFIGS = sorted((Path(__file__).parents[1] / "fixtures" / "gptneo").glob("gpt*.json"))
XL_LAYOUT = "batch:x,memory_length:y,embd:y"  # GPT-Neo's gpt3_XL_256_Pile.json and gpt3_13B_256_Pile.json


def test_mesh_tf_names_map_to_neo_names():
    assert parse_layout("batch:x,memory_length:y,intermediate_expanded:y") == {
        "batch": ("x",),
        "memory_length": ("y",),
        "mlp": ("y",),
    }
    assert parse_layout("features_per_head:x,embed_sequence:y") == {"kv": ("x",), "length": ("y",)}
    assert parse_layout("sequence:x,memory_length:y") == {"length": ("x",), "memory_length": ("y",)}


@pytest.mark.parametrize("path", GPTNEO_CONFIGS, ids=lambda p: p.stem)
def test_every_original_gpt_neo_layout_parses_on_its_mesh(path: Path) -> None:
    original = json.loads(path.read_text())
    axes = [name for name, _ in parse_mesh_shape(original["mesh_shape"])]
    rules = dict(layout_rules(original["layout"], axes))
    for part in original["layout"].split(","):
        name, axis = part.split(":")
        assert axis in axes and name  # every entry lands on one of its mesh's axes
    assert sum(v is not None for v in rules.values()) == len(original["layout"].split(","))


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
        ("sequence:x,embed_sequence:y", "'length' is on more than one mesh axis"),
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
    assert parse_layout("sequence:y,embed_sequence:y") == {"length": ("y",)}


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


def test_gpt_neo_xl_layout_keeps_the_keys_length_apart_from_the_queries():
    rules = layout_rules(XL_LAYOUT, ["x", "y"])
    acts = {
        "hidden": LogicalShape((8, 16, 32), ("batch", "length", "embd")),  # length replicated: no clash with embd
        "keys": LogicalShape((8, 16, 4, 8), ("batch", "memory_length", "heads", "kv")),
    }
    validate_layout(acts, {"x": 4, "y": 2}, rules)
    clash = {"both": LogicalShape((8, 16, 32), ("batch", "memory_length", "embd"))}
    with pytest.raises(LayoutError, match=r"both.*'y' is used twice"):
        validate_layout(clash, {"x": 4, "y": 2}, rules)


def _constraint_specs(jaxpr: jax.extend.core.Jaxpr) -> list[jax.sharding.PartitionSpec]:
    """The PartitionSpec of every sharding constraint in a jaxpr, its scan/jit bodies included."""
    specs = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "sharding_constraint":
            specs.append(eqn.params["sharding"].spec)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    specs += _constraint_specs(inner)
    return specs


def test_gpt_neo_xl_layout_shards_keys_and_values_and_keeps_the_logits():
    from neo.model.transformer import GPTNeo
    from tests.model.conftest import logits_fn, params_for, small

    cfg = small()
    params = params_for(cfg)  # shared with the model tests' (the init dominates this test's time when run alone)
    tokens = np.random.RandomState(0).randint(0, cfg.n_vocab, size=(2, cfg.n_ctx)).astype(np.int32)
    mesh = make_mesh(MeshConfig(shape="x:2,y:4"))
    rules = layout_rules(XL_LAYOUT, list(mesh.axis_names))
    validate_layout(jax.eval_shape(GPTNeo(cfg).init, jax.random.key(0), tokens), mesh, rules)

    def forward(params, tokens):
        return GPTNeo(cfg).apply({"params": params}, tokens)

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        specs = _constraint_specs(jax.make_jaxpr(forward)(params, tokens).jaxpr)
        sharded = np.asarray(jax.jit(forward)(params, tokens))
    kv = jax.sharding.PartitionSpec("x", "y", None, None)  # batch:x, memory_length:y, heads, kv
    assert specs.count(kv) == 2 * cfg.scan_period()  # k and v of each layer in the scanned block
    assert jax.sharding.PartitionSpec("x", None, None, None) in specs  # q: its length stays whole
    np.testing.assert_allclose(sharded, np.asarray(logits_fn(cfg)(params, tokens)), atol=2e-5, rtol=1e-5)


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


@pytest.mark.slow  # ~15 s on 2 cores; the forward pass above compiles with this layout in the default suite
def test_gpt_neo_xl_layout_compiles_the_train_step_on_8_devices():
    from neo.config import compose
    from neo.train.dry_run import dry_run

    overrides = ["model=tiny", "model.n_vocab=512", "train.batch_size=16", "mesh=cpu-8", "mesh.shape=x:2,y:4"]
    report = dry_run(compose([*overrides, f"mesh.layout={XL_LAYOUT}"]))
    assert report.devices == 8 and report.peak_bytes > report.argument_bytes > 0
