"""`neo train --dry-run`: compile the real train step against abstract inputs and report per-device memory.

Nothing is allocated: the state and batch are `jax.ShapeDtypeStruct`s with their shardings, so a model far larger
than this machine compiles as long as the target devices exist (real, or simulated host devices).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from neo.config import NeoConfig
from neo.errors import LayoutError
from neo.parallel.compiled import compiler_oom, estimate_step_time, report_of
from neo.parallel.flops import bandwidth_per_device, memory_per_device, peak_flops_per_device
from neo.parallel.layout import layout_rules, mesh_ways, parse_layout
from neo.parallel.mesh import placement
from neo.parallel.search import Candidate, SearchResult, candidates, layout_prescreen, search
from neo.parallel.shape import resolve_mesh_shape
from neo.parallel.targets import compiler_name, target_devices
from neo.train.metrics import flops_per_token
from neo.train.session import Session, build_session
from neo.train.step import batch_shape

GiB = 1024**3


@dataclass
class DryRunReport:
    n_params: int
    devices: int
    mesh: dict[str, int]
    argument_bytes: int  # params + optimizer state + batch, per device
    temp_bytes: int  # activations and other scratch, per device
    output_bytes: int
    peak_bytes: int  # argument + temp + output - aliased (donated) bytes
    device_memory: int | None  # bytes per device of the target, when the mesh preset knows it
    exact: bool  # the target's own compiler (real devices / libtpu) rather than simulated CPU devices
    compiler: str = ""  # which compiler produced these numbers (neo.parallel.targets.compiler_name)
    step_time_s: float = 0.0  # roofline estimate from the compiled cost (neo.parallel.compiled.estimate_step_time)
    mfu: float = 0.0  # model FLOPs / (estimated step time x peak)
    compile_s: float = 0.0
    error: str = ""  # the compiler's own refusal (RESOURCE_EXHAUSTED): peak_bytes is then only a lower bound
    attention: str = ""  # the attention kernel compiled (model.attention_impl, `auto` resolved for these devices)
    precision: str = ""  # the activation dtype compiled (model.precision, `auto` resolved for the mesh preset)
    cost_known: bool = True  # CompileReport.cost_known: False makes the step estimate a lower bound

    @property
    def fits(self) -> bool | None:
        return None if not self.device_memory else self.peak_bytes <= self.device_memory

    def summary(self) -> str:
        cap = f" of {self.device_memory / GiB:.2f} GiB" if self.device_memory else ""
        verdict = {True: "fits", False: "does NOT fit", None: "device memory unknown"}[self.fits]
        if self.error:
            return (
                f"{self.n_params:,} parameters on {self.devices} device(s), mesh {self.mesh}\n"
                f"per device: more than {self.peak_bytes / GiB:.3f} GiB{cap}: {verdict} ({self.error})\n"
                f"compiled by: {self.compiler} in {self.compile_s:.1f} s{self._kernel()}"
            )
        source = "" if self.exact else " (estimate: compiled for simulated CPU devices)"
        timing = f"est. step {format_seconds(self.step_time_s)}, est. MFU {self.mfu:.0%} (roofline estimate)\n"
        if not self.cost_known:
            timing = (
                f"est. step ≥ {format_seconds(self.step_time_s)} (the model's FLOPs at peak plus communication: "
                "this compiler reports no FLOP or byte counts)\n"
            )
        return (
            f"{self.n_params:,} parameters on {self.devices} device(s), mesh {self.mesh}\n"
            f"per device: arguments {self.argument_bytes / GiB:.3f} GiB, temporaries {self.temp_bytes / GiB:.3f} GiB,"
            f" peak {self.peak_bytes / GiB:.3f} GiB{cap}: {verdict}{source}\n"
            + (timing if self.step_time_s > 0 else "")
            + f"compiled by: {self.compiler} in {self.compile_s:.1f} s{self._kernel()}"
        )

    def _kernel(self) -> str:
        kernel = f", attention kernel: {self.attention}" if self.attention else ""
        return kernel + (f", activations: {self.precision}" if self.precision else "")


def dry_run(cfg: NeoConfig) -> DryRunReport:
    """Compile the train step of `cfg` for its mesh preset's devices (simulated if absent) and read its memory."""
    devices, exact = target_devices(cfg.mesh)
    session = build_session(cfg, devices=devices)
    start = time.perf_counter()
    try:
        compiled = _StepInContext(session).lower(session.layout.abstract, abstract_batch(session)).compile()
    except Exception as exc:  # the TPU compiler refuses a program too large for HBM instead of sizing it
        oom = compiler_oom(exc)
        if oom is None:
            raise
        return DryRunReport(
            n_params=session.n_params,
            devices=int(session.mesh.devices.size),
            mesh=dict(session.mesh.shape),
            argument_bytes=0,
            temp_bytes=oom[0],
            output_bytes=0,
            peak_bytes=oom[0],
            device_memory=memory_per_device(cfg.mesh, devices if exact else None) or oom[0] - 1,
            exact=exact,
            compiler=compiler_name(devices, exact),
            compile_s=time.perf_counter() - start,
            error=f"compiler: {oom[1]}",
            attention=session.model.config.attention_impl,
            precision=session.model.config.precision,
        )
    from neo.model.params import abstract_variables

    trips = scan_length(abstract_variables(cfg.model)["params"])
    cost = report_of(compiled, time.perf_counter() - start, trips)
    mem = compiled.memory_analysis()
    arg, temp, out = mem.argument_size_in_bytes, mem.temp_size_in_bytes, mem.output_size_in_bytes
    peak = cfg.mesh.peak_flops_per_device or peak_flops_per_device(cfg.mesh)
    useful = step_model_flops(cfg, session.n_params) / len(devices)
    step_time = estimate_step_time(
        cost, peak, bandwidth_per_device(cfg.mesh, devices), useful * remat_factor(cfg.model.remat_policy)
    )
    return DryRunReport(
        n_params=session.n_params,
        devices=int(session.mesh.devices.size),
        mesh=dict(session.mesh.shape),
        argument_bytes=arg,
        temp_bytes=temp,
        output_bytes=out,
        peak_bytes=arg + temp + out - mem.alias_size_in_bytes,
        device_memory=memory_per_device(cfg.mesh, devices if exact else None),
        exact=exact,
        compiler=compiler_name(devices, exact),
        step_time_s=step_time,
        mfu=useful / (step_time * peak) if step_time > 0 and peak > 0 else 0.0,
        cost_known=cost.cost_known,
        compile_s=cost.compile_s,
        attention=session.model.config.attention_impl,
        precision=session.model.config.precision,
    )


def remat_factor(policy: str) -> float:
    """Executed / useful FLOPs: full remat runs the forward pass twice (8N instead of 6N per token)."""
    return 4 / 3 if policy == "full" else 1.0


def scan_length(params: Any) -> int:
    """Iterations of the scanned layer stack: the size of the `layers` axis of its parameters (1 if not scanned)."""
    for leaf in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
        names = getattr(leaf, "names", ())
        if "layers" in names:
            return int(leaf.value.shape[names.index("layers")])
    return 1


def format_seconds(seconds: float) -> str:
    """`0.0901 ms`, `111 ms`, `12.3 s`: three significant digits for estimates spanning microseconds to minutes."""
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def step_model_flops(cfg: NeoConfig, n_params: int) -> float:
    """The useful FLOPs of one train step over all devices (the MFU numerator; remat's recomputation excluded)."""
    return flops_per_token(cfg.model, n_params) * cfg.train.batch_size * cfg.model.n_ctx


class _StepInContext:
    """The real train step, lowered under its mesh and logical-axis rules (what `search` compiles)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def lower(self, *args: Any) -> Any:
        with placement(self.session.mesh, self.session.rules):
            return self.session.train_step.jitted.lower(*args)


def step_factory(cfg: NeoConfig, mesh: Mesh, rules: Any) -> tuple[_StepInContext, tuple[Any, Any]]:
    """`neo.parallel.search`'s factory: the train step of `cfg` on `mesh` with `rules`, and its abstract inputs."""
    session = build_session(cfg, mesh=mesh, rules=rules)
    return _StepInContext(session), (session.layout.abstract, abstract_batch(session))


def abstract_batch(session: Session) -> jax.ShapeDtypeStruct:
    cfg = session.cfg
    return jax.ShapeDtypeStruct(
        batch_shape(cfg.model, cfg.train.batch_size), jnp.int32, sharding=session.batch_sharding
    )


def _state_bytes_per_device(boxed_params: Any, rules: Any, sizes: dict[str, int], optimizer: str) -> float:
    """Parameters, gradients and optimizer moments per device under `rules`: the pre-screen's memory floor."""
    total = 0.0
    for leaf in jax.tree.leaves(boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
        split = math.prod(mesh_ways(axes, sizes) for axes in nn.logical_to_mesh_axes(leaf.names, rules))
        total += leaf.value.size * leaf.value.dtype.itemsize / split
    copies = 4 if optimizer == "adam" else 2  # params + grads (+ two Adam moments)
    return total * copies


def _tensor_parallel_ways(candidate: Candidate, sizes: dict[str, int]) -> int:
    mapping = parse_layout(candidate.layout)
    return mesh_ways(tuple(set(mapping.get("heads", ())) | set(mapping.get("mlp", ()))), sizes)


@dataclass
class LayoutSearch:
    results: list[SearchResult]
    exact: bool  # compiled by the target's own compiler (real devices or libtpu), not simulated CPU devices
    compiler: str  # which one (neo.parallel.targets.compiler_name)
    considered: int  # candidates enumerated, before the pre-screen
    ranked: int  # candidates with compiler figures (compiled in full, or screened)


def screens(devices: list[Any], exact: bool) -> bool:
    """Whether the search screens candidates before code generation (`neo.parallel.screen`): for TPUs compiled ahead
    of time by libtpu without them, where code generation is ~95% of a compile and the compiler runs in a child."""
    return exact and devices[0].platform == "tpu" and jax.default_backend() != "tpu"


def search_layouts(
    cfg: NeoConfig,
    *,
    and_mesh_shape: bool = False,
    exact_top: int | None = None,
    progress: Any = None,
    budget_s: float | None = None,
    full: bool = False,
) -> LayoutSearch:
    """Rank (mesh shape, layout) candidates for `cfg` on its mesh preset.

    Pre-screen every candidate without compiling (divisibility and axis-reuse checks, then the analytic memory of
    parameters, gradients and optimizer state), keep the `exact_top` most data-parallel survivors (all by default),
    and rank them by the compiler's per-device memory and estimated step time. For TPUs compiled ahead of time the
    survivors are screened (the compiler stopped before code generation, several at once) and the leader compiled in
    full; elsewhere, or with `full`, each survivor is compiled in full. `budget_s` bounds the compiling.
    Every candidate is in the result: ranked, rejected with its reason, or skipped with the reason.
    """
    from neo.model.params import abstract_variables

    devices, exact = target_devices(cfg.mesh)
    n = len(devices)
    cands = candidates(n, shape=cfg.mesh.shape, and_mesh_shape=and_mesh_shape)
    boxed = abstract_variables(cfg.model)["params"]
    check = layout_prescreen(boxed)
    limit = memory_per_device(cfg.mesh, devices if exact else None)
    survivors: list[tuple[int, float, Candidate]] = []
    rejected: list[SearchResult] = []
    for cand in cands:
        axes = dict(resolve_mesh_shape(cand.shape, n))
        rules = layout_rules(cand.layout, list(axes))
        try:
            check(cand, rules, axes)
        except LayoutError as exc:
            rejected.append(SearchResult(cand, None, False, math.inf, 0.0, str(exc)))
            continue
        floor = _state_bytes_per_device(boxed, rules, axes, cfg.optimizer.name)
        if limit and floor > limit:
            reason = f"parameters + optimizer state alone need {floor / GiB:.1f} GiB per device"
            rejected.append(SearchResult(cand, None, False, math.inf, 0.0, reason))
            continue
        survivors.append((_tensor_parallel_ways(cand, axes), floor, cand))
    survivors.sort(key=lambda t: (t[0], t[1]))
    model_flops = step_model_flops(cfg, sum(leaf.size for leaf in jax.tree.leaves(nn.unbox(boxed))))
    chosen = [c for _, _, c in survivors[:exact_top]]
    for _, _, cand in survivors[len(chosen) :]:
        reason = f"not compiled: only the {len(chosen)} most data-parallel survivors were (--compile)"
        rejected.append(SearchResult(cand, None, False, math.inf, 0.0, reason, skipped=True))
    results = search(
        cfg,
        cfg.mesh,
        step_factory,
        chosen,
        memory_limit=limit,
        peak_flops=cfg.mesh.peak_flops_per_device or peak_flops_per_device(cfg.mesh),
        model_flops=model_flops,
        hardware_flops=model_flops * remat_factor(cfg.model.remat_policy),
        loop_trips=scan_length(boxed),
        devices=devices,
        progress=progress,
        budget_s=budget_s,
        screen=not full and screens(devices, exact),
    )
    return LayoutSearch(
        results=results + rejected,
        exact=exact,
        compiler=compiler_name(devices, exact),
        considered=len(cands),
        ranked=sum(r.report is not None for r in results),
    )
