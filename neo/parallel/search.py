"""Toward `neo layout search`: enumerate (mesh shape, layout) candidates, pre-screen them cheaply, and compile the
real step against abstract inputs on the target devices to read per-device memory and cost.

The trainer supplies a *step factory*: `factory(config, mesh, rules) -> (jitted_step, abstract_args)` where
`jitted_step.lower(*abstract_args).compile()` compiles without allocating (args are `jax.ShapeDtypeStruct`s with
shardings). This module never imports the model or the trainer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jax

from neo.errors import LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.flops import cache_dir
from neo.parallel.layout import Rules, layout_rules, parse_layout
from neo.parallel.shape import format_mesh_shape, resolve_mesh_shape

AXIS_NAMES = ("x", "y", "z", "w")
# What a mesh axis can be used for, as the logical names it splits. "fsdp" shards parameters along embd while the
# batch is split on the same axis (ZeRO-3 style); "tensor" is Megatron-style heads/MLP splitting.
ROLES: dict[str, tuple[str, ...]] = {"data": ("batch",), "fsdp": ("batch", "embd"), "tensor": ("heads", "mlp")}
# Rough per-device collective bandwidth (bytes/s) for the communication term of the step-time estimate.
COLLECTIVE_BANDWIDTH = {"tpu": 100e9, "gpu": 300e9, "cpu": 10e9}
# Rough per-device memory bandwidth (bytes/s) for the memory-bound term.
MEMORY_BANDWIDTH = {"tpu": 900e9, "gpu": 3e12, "cpu": 20e9}

StepFactory = Callable[[Any, Any, Rules], tuple[Any, Sequence[Any]]]


@dataclass(frozen=True)
class Candidate:
    shape: str  # mesh.shape, e.g. "x:64,y:4"
    layout: str  # mesh.layout, e.g. "batch:x,heads:y,mlp:y"


@dataclass
class CompileReport:
    """What the compiler says about one candidate, per device."""

    memory_bytes: int  # arguments + outputs + temporaries - aliased (donated) buffers
    argument_bytes: int
    temp_bytes: int
    flops: float
    bytes_accessed: float
    collective_bytes: float  # result bytes of all-reduce/all-gather/reduce-scatter/all-to-all/permute ops
    compile_s: float


@dataclass
class SearchResult:
    candidate: Candidate
    report: CompileReport | None  # None when the pre-screen rejected it
    fits: bool
    step_time_s: float  # estimate: compute or memory bound, plus communication
    mfu: float  # model FLOPs / (step time x peak), from the compiler's FLOP count
    error: str | None = None


def factorizations(n: int, max_axes: int = 4) -> list[tuple[int, ...]]:
    """Unordered factorizations of `n` into at most `max_axes` factors > 1 (non-increasing); `(1,)` for n = 1."""
    if n == 1:
        return [(1,)]
    out: list[tuple[int, ...]] = []

    def rec(rest: int, largest: int, prefix: tuple[int, ...]) -> None:
        if rest == 1:
            out.append(prefix)
            return
        if len(prefix) == max_axes:
            return
        for f in range(min(rest, largest), 1, -1):
            if rest % f == 0:
                rec(rest // f, f, (*prefix, f))

    rec(n, n, ())
    return out


def layouts_for_axes(axis_names: Sequence[str]) -> list[str]:
    """Every assignment of a role to each mesh axis, as layout strings (pure data parallelism first)."""
    seen: dict[str, None] = {}
    for roles in itertools.product(ROLES, repeat=len(axis_names)):
        mapping: dict[str, list[str]] = {}
        for axis, role in zip(axis_names, roles, strict=True):
            for name in ROLES[role]:
                mapping.setdefault(name, []).append(axis)
        seen.setdefault(",".join(f"{k}:{'+'.join(v)}" for k, v in mapping.items()), None)
    return list(seen)


def candidates(n_devices: int, shape: str = "", and_mesh_shape: bool = False, max_axes: int = 4) -> list[Candidate]:
    """Candidates on a fixed `shape` (its layouts), or with `and_mesh_shape` over factorizations of the device count.

    With mesh shapes searched, two candidates whose roles get the same total sizes are the same parallelism, so
    only one is kept (e.g. data 4×2 == data 8).
    """
    if not and_mesh_shape:
        axes = resolve_mesh_shape(shape, n_devices)
        shape_text = format_mesh_shape(axes)
        return [Candidate(shape_text, layout) for layout in layouts_for_axes([a for a, _ in axes])]
    out: list[Candidate] = []
    seen: set[tuple[tuple[str, int], ...]] = set()
    for factors in factorizations(n_devices, max_axes):
        names = AXIS_NAMES[: len(factors)]
        sizes = dict(zip(names, factors, strict=True))
        for layout in layouts_for_axes(names):
            key = _role_sizes(layout, sizes)
            if key in seen:
                continue
            seen.add(key)
            out.append(Candidate(format_mesh_shape(list(sizes.items())), layout))
    return out


def _role_sizes(layout: str, sizes: dict[str, int]) -> tuple[tuple[str, int], ...]:
    mapping = parse_layout(layout)
    return tuple(sorted((name, math.prod(sizes[a] for a in axes)) for name, axes in mapping.items()))


_COLLECTIVE = re.compile(
    r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64|c64|c128)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4}


def collective_bytes(hlo_text: str) -> float:
    """Sum of the result sizes of the collectives in a compiled (partitioned) HLO module."""
    total = 0.0
    for match in _COLLECTIVE.finditer(hlo_text):
        for dtype, dims in _ARRAY.findall(match.group(1)):
            total += _BYTES.get(dtype, 8) * math.prod(int(d) for d in dims.split(",") if d)
    return total


def compile_report(step: Any, args: Sequence[Any]) -> CompileReport:
    """Compile `step` against abstract `args` and read the compiler's memory and cost analyses (per device)."""
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax returned one dict per program
        cost = cost[0] if cost else {}
    arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
    temp, alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
    return CompileReport(
        memory_bytes=arg + out + temp - alias + int(mem.generated_code_size_in_bytes),
        argument_bytes=arg,
        temp_bytes=temp,
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        collective_bytes=collective_bytes(compiled.as_text() or ""),
        compile_s=seconds,
    )


def estimate_step_time(report: CompileReport, platform: str, peak_flops: float) -> float:
    """Roofline estimate: the slower of compute and memory traffic, plus collectives at a rough bandwidth."""
    compute = report.flops / peak_flops if peak_flops > 0 else 0.0
    memory = report.bytes_accessed / MEMORY_BANDWIDTH[platform]
    return max(compute, memory) + report.collective_bytes / COLLECTIVE_BANDWIDTH[platform]


def request_cpu_devices(n: int) -> None:
    """Ask for `n` simulated CPU devices (to stand in for a pod); must run before JAX starts its backends."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if len(jax.devices("cpu")) < n:
            raise LayoutError(
                f"JAX already started with {len(jax.devices('cpu'))} CPU devices; {n} are needed to simulate this "
                f"mesh: set XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting"
            )
        return
    jax.config.update("jax_num_cpu_devices", n)


def target_devices(cfg: MeshConfig) -> tuple[list[Any], bool]:
    """Devices to compile for, and whether the compiler is the target's own (exact) rather than a CPU stand-in.

    Real devices of the right kind and count win; a TPU preset with a topology uses libtpu's ahead-of-time
    compiler when the `libtpu` wheel is installed; otherwise simulated CPU devices stand in (an estimate).
    """
    present = jax.devices()
    n = cfg.devices or len(present)
    if len(present) == n and str(present[0].platform).replace("cuda", "gpu") == cfg.platform:
        return present, True
    if cfg.platform == "tpu" and cfg.topology and importlib.util.find_spec("libtpu") is not None:
        from jax.experimental import topologies

        kwargs: dict[str, Any] = {}
        if cfg.chips_per_host_bounds:
            kwargs["chips_per_host_bounds"] = tuple(cfg.chips_per_host_bounds)
        topo = topologies.get_topology_desc(
            platform="tpu", topology_name=cfg.topology, chip_config_name=cfg.tpu_chip_config, num_slices=1, **kwargs
        )
        if len(topo.devices) != n:
            raise LayoutError(f"topology '{cfg.topology}' has {len(topo.devices)} devices, mesh '{cfg.name}' {n}")
        return list(topo.devices), True
    cpus = jax.devices("cpu")
    if len(cpus) < n:
        raise LayoutError(
            f"mesh '{cfg.name}' needs {n} devices to compile for but {len(cpus)} CPU devices are simulated; start with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (or install libtpu for TPU presets)"
        )
    return cpus[:n], False


def layout_prescreen(tree: Any, names: Any | None = None) -> Callable[[Candidate, Rules, dict[str, int]], None]:
    """A pre-screen for `search`: `validate_layout` of `tree` (abstract params, LogicalShapes of the batch...)."""
    from neo.parallel.layout import validate_layout

    def check(candidate: Candidate, rules: Rules, mesh_shape: dict[str, int]) -> None:
        validate_layout(tree, mesh_shape, rules, names)

    return check


def _cache_key(config: Any, candidate: Candidate, devices: Sequence[Any]) -> str:
    blob = json.dumps(
        [repr(config), asdict(candidate), str(devices[0].device_kind), len(devices), jax.__version__], default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def search(
    config: Any,
    mesh_cfg: MeshConfig,
    factory: StepFactory,
    cands: Iterable[Candidate],
    *,
    prescreen: Callable[[Candidate, Rules, dict[str, int]], None] | None = None,
    memory_limit: int | None = None,
    peak_flops: float = 0.0,
    devices: Sequence[Any] | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int, Candidate], None] | None = None,
) -> list[SearchResult]:
    """Compile every candidate that survives `prescreen` (which raises LayoutError to reject) and rank them:
    fitting candidates first, then by estimated step time, then by memory."""
    from neo.parallel.mesh import make_mesh

    if devices is None:
        devices, _ = target_devices(mesh_cfg)
    devices = list(devices)
    platform = mesh_cfg.platform
    limit = memory_limit if memory_limit is not None else (mesh_cfg.memory_per_device or None)
    peak = peak_flops or mesh_cfg.peak_flops_per_device
    cache_path = cache_dir() / "layout_search"
    cand_list = list(cands)
    results: list[SearchResult] = []
    for i, cand in enumerate(cand_list):
        if progress is not None:
            progress(i, len(cand_list), cand)
        axes = resolve_mesh_shape(cand.shape, len(devices))
        rules = layout_rules(cand.layout, [a for a, _ in axes])
        try:
            if prescreen is not None:
                prescreen(cand, rules, dict(axes))
        except LayoutError as exc:
            results.append(SearchResult(cand, None, False, math.inf, 0.0, str(exc)))
            continue
        key = _cache_key(config, cand, devices)
        cached = cache_path / f"{key}.json"
        report: CompileReport | None = None
        if use_cache and cached.is_file():
            report = CompileReport(**json.loads(cached.read_text()))
        if report is None:
            mesh = make_mesh(MeshConfig(name=mesh_cfg.name, shape=cand.shape), devices)
            try:
                step, args = factory(config, mesh, rules)
                report = compile_report(step, args)
            except LayoutError as exc:
                results.append(SearchResult(cand, None, False, math.inf, 0.0, str(exc)))
                continue
            if use_cache:
                cache_path.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(".tmp")
                tmp.write_text(json.dumps(asdict(report)))
                tmp.replace(cached)
        step_time = estimate_step_time(report, platform, peak)
        mfu = report.flops / (step_time * peak) if step_time > 0 and peak > 0 else 0.0
        fits = limit is None or report.memory_bytes <= limit
        results.append(SearchResult(cand, report, fits, step_time, mfu))
    return sorted(results, key=_rank)


def _rank(r: SearchResult) -> tuple[int, float, float]:
    memory = r.report.memory_bytes if r.report else math.inf
    return (0 if r.fits else 1 if r.report else 2, r.step_time_s, memory)
