"""Candidate enumeration and compile-based ranking with a toy step factory (what the trainer will provide)."""

import importlib.util
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding

from neo.errors import LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.flops import CPU_BANDWIDTH, bandwidth_per_device
from neo.parallel.layout import LogicalShape, parse_layout
from neo.parallel.presets import preset, presets
from neo.parallel.search import Candidate, candidates, factorizations, layout_prescreen, layouts_for_axes, search
from neo.parallel.targets import target_devices

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install libtpu, Linux x86-64): the TPU compiler cannot run here",
)


def test_factorizations():
    assert factorizations(8) == [(8,), (4, 2), (2, 2, 2)]
    assert factorizations(1) == [(1,)]
    assert all(math.prod(f) == 256 and len(f) <= 4 for f in factorizations(256))
    assert (2, 2, 2, 2) in factorizations(16) and (2, 2, 2, 2, 2) not in factorizations(32, max_axes=4)


def test_layouts_for_axes_start_with_data_parallel_and_parse():
    layouts = layouts_for_axes(["x", "y"])
    assert layouts[0] == "batch:x+y"
    assert len(layouts) == len(set(layouts)) == 9
    for layout in layouts:
        parse_layout(layout, ["x", "y"])


def test_candidates_with_mesh_shapes_are_deduplicated():
    cands = candidates(8, and_mesh_shape=True)
    assert Candidate("x:8", "batch:x") in cands
    # (data, fsdp, tensor) sizes with product 8: 10 distinct splits
    assert len(cands) == 10
    fixed = candidates(8, shape="x:4,y:2")
    assert {c.shape for c in fixed} == {"x:4,y:2"} and len(fixed) == 9


def test_every_accelerator_preset_has_documented_bandwidths():
    for name, cfg in presets().items():
        memory, link = bandwidth_per_device(cfg)
        assert (cfg.platform == "cpu") == ((memory, link) == CPU_BANDWIDTH), name
    # v3 devices are TensorCores: half a chip's 900 GB/s HBM
    assert bandwidth_per_device(preset("v3-8"))[0] == pytest.approx(450e9)


class Toy(nn.Module):
    vocab: int = 256
    embd: int = 64
    heads: int = 4
    mlp: int = 256

    @nn.compact
    def __call__(self, ids):
        init = nn.initializers.normal(0.02)
        wte = self.param("wte", nn.with_logical_partitioning(init, ("vocab", "embd")), (self.vocab, self.embd))
        qkv = self.param(
            "qkv", nn.with_logical_partitioning(init, ("embd", "heads", "kv")), (self.embd, self.heads, 16)
        )
        w1 = self.param("w1", nn.with_logical_partitioning(init, ("embd", "mlp")), (self.embd, self.mlp))
        w2 = self.param("w2", nn.with_logical_partitioning(init, ("mlp", "embd")), (self.mlp, self.embd))
        x = wte[ids]
        h = jnp.einsum("ble,ehk->blhk", x, qkv).reshape(x.shape[0], x.shape[1], -1)[..., : self.embd]
        x = x + jnp.tanh(h @ w1) @ w2
        return x @ wte.T


BATCH, LEN = 16, 32


def toy_factory(config, mesh, rules):
    model = Toy(**config)
    ids = jnp.zeros((BATCH, LEN), jnp.int32)
    boxed = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
    param_sharding = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    abstract = jax.tree.map(
        lambda box, s: jax.ShapeDtypeStruct(box.value.shape, box.value.dtype, sharding=s),
        boxed,
        param_sharding,
        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned),
    )
    batch_spec = nn.logical_to_mesh_axes(("batch", "length"), rules)
    batch = jax.ShapeDtypeStruct((BATCH, LEN), jnp.int32, sharding=NamedSharding(mesh, batch_spec))

    def loss(params, ids):
        logits = model.apply({"params": params}, ids)
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    def step(params, ids):
        grads = jax.grad(loss)(params, ids)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    return jax.jit(step, out_shardings=param_sharding, donate_argnums=0), (abstract, batch)


def toy_prescreen(config):
    boxed = jax.eval_shape(Toy(**config).init, jax.random.key(0), jnp.zeros((BATCH, LEN), jnp.int32))["params"]
    return layout_prescreen({"params": boxed, "tokens": LogicalShape((BATCH, LEN), ("batch", "length"))})


def test_search_ranks_compiled_candidates(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    config = {"heads": 4}
    mesh_cfg = MeshConfig(name="cpu", platform="cpu", memory_per_device=10**9, peak_flops_per_device=1e11)
    devices, exact = target_devices(mesh_cfg)
    assert len(devices) == 8 and exact
    cands = [
        Candidate("x:8", "batch:x"),
        Candidate("x:8", "batch:x,embd:x"),
        Candidate("x:8", "heads:x"),  # 4 heads on 8 devices: rejected by the pre-screen
        Candidate("x:4,y:2", "batch:x,heads:y,mlp:y"),
    ]
    seen = []
    results = search(
        config,
        mesh_cfg,
        toy_factory,
        cands,
        prescreen=toy_prescreen(config),
        progress=lambda i, n, c, stage: seen.append(i),
    )
    assert seen == [0, 1, 2]  # the pre-screen's survivors, as each compile starts
    by = {r.candidate: r for r in results}
    rejected = by[Candidate("x:8", "heads:x")]
    assert rejected.report is None and "'heads' of size 4 is not divisible" in rejected.error
    assert results[-1] is rejected
    dp, fsdp = by[Candidate("x:8", "batch:x")].report, by[Candidate("x:8", "batch:x,embd:x")].report
    assert fsdp.argument_bytes < dp.argument_bytes  # parameters are sharded, not replicated
    assert all(r.fits and r.step_time_s > 0 and r.report.flops > 0 for r in results[:3])
    assert dp.collective_bytes > 0  # gradient all-reduce
    # a second search hits the on-disk cache instead of compiling
    cached = search(config, mesh_cfg, lambda *a: pytest.fail("compiled again"), cands[:2])
    assert {r.candidate: r.report for r in cached} == {c: by[c].report for c in cands[:2]}


def test_compile_budget_stops_before_a_compile_that_would_overrun(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    clock = [0.0]
    monkeypatch.setattr("neo.parallel.search.time.perf_counter", lambda: clock[0])

    def slow_factory(*args):  # every compile "takes" 10 s
        clock[0] += 10
        return toy_factory(*args)

    mesh_cfg = MeshConfig(name="cpu", platform="cpu")
    cands = [Candidate("x:8", "batch:x"), Candidate("x:8", "batch:x,embd:x"), Candidate("x:4,y:2", "batch:x+y")]
    results = search({"heads": 4}, mesh_cfg, slow_factory, cands, use_cache=False, budget_s=25)
    by = {r.candidate: r for r in results}
    assert by[cands[0]].report is not None and by[cands[1]].report is not None  # 10 s, then 10 + 10 <= 25
    assert by[cands[2]].skipped and by[cands[2]].report is None and "budget" in by[cands[2]].error  # 20 + 10 > 25
    assert results[-1] is by[cands[2]]


def test_memory_limit_marks_candidates_that_do_not_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    mesh_cfg = MeshConfig(name="tiny", memory_per_device=1000)
    results = search({}, mesh_cfg, toy_factory, [Candidate("x:8", "batch:x")], use_cache=False)
    assert not results[0].fits and results[0].report.memory_bytes > 1000


@needs_libtpu
def test_tpu_presets_compile_ahead_of_time_with_libtpu(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO_CACHE_DIR", str(tmp_path))
    devices, exact = target_devices(preset("v3-256"))
    assert len(devices) == 256 and exact and "TPU v3" in devices[0].device_kind
    v3_8 = preset("v3-8")
    results = search({}, v3_8, toy_factory, [Candidate("x:8", "batch:x"), Candidate("x:4,y:2", "batch:x,mlp:y")])
    assert all(r.report is not None and r.fits and r.report.flops > 0 for r in results)
    with pytest.raises(LayoutError, match="libtpu cannot describe topology 'v3:3x3'"):
        target_devices(MeshConfig(name="bad", platform="tpu", devices=18, topology="v3:3x3"))
