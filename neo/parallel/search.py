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
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jax

from neo.errors import LayoutError
from neo.parallel.config import MeshConfig
from neo.parallel.flops import cache_dir
from neo.parallel.layout import Rules, axis_ways, layout_rules, parse_layout
from neo.parallel.shape import format_mesh_shape, resolve_mesh_shape

AXIS_NAMES = ("x", "y", "z", "w")
# What a mesh axis can be used for, as the logical names it splits. "fsdp" shards parameters along embd while the
# batch is split on the same axis (ZeRO-3 style); "tensor" is Megatron-style heads/MLP splitting.
ROLES: dict[str, tuple[str, ...]] = {"data": ("batch",), "fsdp": ("batch", "embd"), "tensor": ("heads", "mlp")}
CACHE_VERSION = 2  # bump when CompileReport changes, so stale cached reports are not read

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
    all_reduce_bytes: float = 0.0  # the all-reduce share of collective_bytes (a ring moves those twice)


@dataclass
class SearchResult:
    candidate: Candidate
    report: CompileReport | None  # None when the pre-screen rejected it
    fits: bool
    step_time_s: float  # estimate: compute or memory bound, plus communication (see estimate_step_time)
    mfu: float  # model FLOPs per device / (estimated step time x peak); the compiler's FLOPs if no model count
    error: str | None = None
    skipped: bool = False  # not compiled: the time budget ran out before its turn (the pre-screen passed it)
    source: str = ""  # of `report`: "compiled" (the full program) or "screened" (the compiler's buffer assignment
    # before code generation, `neo.parallel.screen`: code generation adds temporaries, so it errs low)
    screen_memory: int | None = None  # for a candidate first screened, then compiled in full: the screen's figure
    screen_step_s: float | None = None  # and its screened step time, on which it is still ranked (one basis for all)

    @property
    def screen_error(self) -> float | None:
        """(screened - compiled) / compiled memory per device, where both exist."""
        if self.screen_memory is None or self.report is None or not self.report.memory_bytes:
            return None
        return self.screen_memory / self.report.memory_bytes - 1


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
    return tuple(sorted((name, axis_ways(name, mapping.items(), sizes)) for name in mapping))


_COLLECTIVE = re.compile(
    r"=\s*(\(?[^=]*?\)?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
_ARRAY = re.compile(r"\b(pred|s8|u8|s16|u16|f16|bf16|s32|u32|f32|s64|u64|f64|c64|c128)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4}


_CALLEE = re.compile(r"\b(?:body|calls)=%([\w.\-]+)")
_TRIPS = re.compile(r"known_trip_count[^0-9]*([0-9]+)")


def _computations(lines: list[str], loop_trips: int) -> list[tuple[float, list[str]]]:
    """HLO text as (runs per step, lines) per computation; the whole text once when it has no headers."""
    comps: dict[str, list[str]] = {}
    entry = current = None
    for line in lines:
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            words = line.split()
            current = (words[1] if words[0] == "ENTRY" else words[0]).lstrip("%")
            comps[current] = []
            entry = current if words[0] == "ENTRY" else entry
        elif current is not None:
            comps[current].append(line)
    if entry is None:
        return [(1.0, lines)]
    weight: dict[str, float] = {}

    def visit(name: str, times: float, depth: int) -> None:
        weight[name] = weight.get(name, 0.0) + times
        for line in comps.get(name, ()) if depth < 32 else ():
            trips = 1
            if " while(" in line:  # XLA records a scan's trip count on CPU/GPU; the TPU compiler's text omits it
                found = _TRIPS.search(line)
                trips = int(found.group(1)) if found else loop_trips
            for callee in _CALLEE.findall(line):
                visit(callee, times * trips, depth + 1)

    visit(entry, 1.0, 0)
    return [(w, comps[name]) for name, w in weight.items() if name in comps]


def collective_bytes(hlo_text: str, ops: tuple[str, ...] = (), loop_trips: int = 1) -> float:
    """Per-step result bytes of the collectives (only `ops`, if given) in a compiled (partitioned) HLO module.

    A collective inside a while loop (the scanned layers) runs once per iteration: it is counted `known_trip_count`
    times, or `loop_trips` times where the compiler's text does not record the count.
    """
    total = 0.0
    for times, lines in _computations(hlo_text.splitlines(), loop_trips):
        for match in _COLLECTIVE.finditer("\n".join(lines)):
            if ops and match.group(2) not in ops:
                continue
            for dtype, dims in _ARRAY.findall(match.group(1)):
                total += times * _BYTES.get(dtype, 8) * math.prod(int(d) for d in dims.split(",") if d)
    return total


def compile_report(step: Any, args: Sequence[Any], loop_trips: int = 1) -> CompileReport:
    """Compile `step` against abstract `args` and read the compiler's memory and cost analyses (per device)."""
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    seconds = time.perf_counter() - start
    return report_of(compiled, seconds, loop_trips)


def report_of(compiled: Any, compile_s: float = 0.0, loop_trips: int = 1) -> CompileReport:
    """The per-device memory, cost and communication of a compiled program."""
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older jax returned one dict per program
        cost = cost[0] if cost else {}
    arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
    temp, alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
    hlo = compiled.as_text() or ""
    return CompileReport(
        memory_bytes=arg + out + temp - alias + int(mem.generated_code_size_in_bytes),
        argument_bytes=arg,
        temp_bytes=temp,
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        collective_bytes=collective_bytes(hlo, loop_trips=loop_trips),
        compile_s=compile_s,
        all_reduce_bytes=collective_bytes(hlo, ("all-reduce",), loop_trips),
    )


_OOM_SIZE = re.compile(r"\(([0-9.]+)([KMGT])\)\s+exceeds")


def compiler_oom(exc: BaseException) -> tuple[int, str] | None:
    """(bytes needed, one-line message) when `exc` is the compiler refusing a program too big for device memory.

    The TPU compiler does not report an oversized program's memory; it fails with RESOURCE_EXHAUSTED naming the
    temporaries it needed (a lower bound on the program's memory), which is still the answer to "does it fit?".
    """
    text = str(exc).strip()
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    line = next((ln for ln in text.splitlines() if "RESOURCE_EXHAUSTED" in ln), text.splitlines()[0])
    match = _OOM_SIZE.search(text)
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    needed = int(float(match.group(1)) * scale[match.group(2)]) if match else 0
    return needed, line.split("RESOURCE_EXHAUSTED:", 1)[-1].strip()


def estimate_step_time(
    report: CompileReport, peak_flops: float, bandwidth: tuple[float, float], min_flops: float = 0.0
) -> float:
    """Roofline estimate of one step, in seconds: an ESTIMATE, not a measurement.

    max(FLOPs / peak FLOP/s, bytes accessed / memory bandwidth) + collective bytes on the wire / interconnect
    bandwidth, per device. XLA's cost analysis counts a while loop's body once, not once per iteration, so for a
    scanned model its FLOPs and bytes fall short: `min_flops` (the analytic work of a step per device, e.g. 8N per
    token with full remat) is a floor on the FLOPs, and the bytes are scaled up by the same shortfall. Collectives
    are counted per loop iteration from the HLO (`collective_bytes`); a ring moves an all-reduce's bytes twice
    (reduce-scatter + all-gather) and the other collectives' once. No overlap of communication with compute is
    assumed, and every link of the chip is assumed usable, so it errs low for communication-heavy layouts on a torus
    and high where XLA overlaps. `bandwidth` is (memory, interconnect) bytes/s per device:
    `neo.parallel.flops.bandwidth_per_device`.
    """
    memory_bw, link_bw = bandwidth
    flops = max(report.flops, min_flops)
    shortfall = flops / report.flops if report.flops > 0 else 1.0
    compute = flops / peak_flops if peak_flops > 0 else 0.0
    memory = report.bytes_accessed * shortfall / memory_bw
    wire = report.collective_bytes + report.all_reduce_bytes
    return max(compute, memory) + wire / link_bw


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


def libtpu_version() -> str | None:
    """The installed `libtpu` wheel's version, or None: the TPU compiler is then unavailable off a TPU."""
    if importlib.util.find_spec("libtpu") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        return "unknown"


def uses_tpu_aot(cfg: MeshConfig) -> bool:
    """Whether `target_devices(cfg)` will compile with libtpu ahead of time (so no CPU devices need simulating)."""
    return cfg.platform == "tpu" and bool(cfg.topology) and libtpu_version() is not None


def _quiet_libtpu_off_tpu() -> None:
    """Let libtpu load as a compile-only library on a machine without TPUs.

    Without these, libtpu guesses the host's TPU type from cloud metadata and prints warnings, and it takes an
    exclusive /tmp lockfile, so a second process (another search, a test worker) could not load it at all.
    """
    import os

    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU is driven, so sharing the library is safe
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v3-8")  # only silences host detection; the topology decides
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def prepare_tpu_aot() -> None:
    """Before JAX starts: on a machine without TPU chips, keep libtpu quiet and shareable (see above)."""
    try:
        from jax._src import hardware_utils  # JAX's own PCI probe for TPU chips

        chips, _ = hardware_utils.num_available_tpu_chips_and_device_id()
    except Exception:  # a JAX without the probe: leave libtpu's defaults alone
        return
    if chips == 0:
        _quiet_libtpu_off_tpu()


def target_devices(cfg: MeshConfig) -> tuple[list[Any], bool]:
    """Devices to compile for, and whether the compiler is the target's own (exact) rather than a CPU stand-in.

    Real devices of the right kind and count win; a TPU preset with a topology uses libtpu's ahead-of-time
    compiler when the `libtpu` wheel is installed; otherwise simulated CPU devices stand in (an estimate).
    """
    present = jax.devices()
    n = cfg.devices or len(present)
    if len(present) == n and str(present[0].platform).replace("cuda", "gpu") == cfg.platform:
        return present, True
    if uses_tpu_aot(cfg):
        from jax.experimental import topologies

        if present[0].platform != "tpu":
            _quiet_libtpu_off_tpu()
            # programs compiled for absent TPUs cannot be read back from JAX's persistent cache (only written, with
            # a warning on the next run); the search keeps its own cache of compile reports instead
            jax.config.update("jax_enable_compilation_cache", False)
        kwargs: dict[str, Any] = {}
        if cfg.chips_per_host_bounds:
            kwargs["chips_per_host_bounds"] = tuple(cfg.chips_per_host_bounds)
        try:
            topo = topologies.get_topology_desc(
                platform="tpu",
                topology_name=cfg.topology,
                chip_config_name=cfg.tpu_chip_config,
                num_slices=1,
                **kwargs,
            )
        except Exception as exc:  # libtpu reports a bad topology or a load failure as a bare runtime error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LayoutError(
                f"libtpu cannot describe topology '{cfg.topology}' of mesh '{cfg.name}': {first}"
            ) from None
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


def compiler_name(devices: Sequence[Any], exact: bool) -> str:
    """Which compiler produced the numbers, for the user: they are only as good as this."""
    kind = str(getattr(devices[0], "device_kind", devices[0].platform))
    if not exact:
        return f"XLA CPU on {len(devices)} simulated devices (an estimate, not the target's compiler)"
    if devices[0].platform == "tpu" and jax.default_backend() != "tpu":
        return f"TPU compiler (libtpu {libtpu_version()}, ahead of time) for {len(devices)} × {kind}: exact"
    return f"XLA for the {len(devices)} × {kind} present: exact"


def layout_prescreen(tree: Any, names: Any | None = None) -> Callable[[Candidate, Rules, dict[str, int]], None]:
    """A pre-screen for `search`: `validate_layout` of `tree` (abstract params, LogicalShapes of the batch...)."""
    from neo.parallel.layout import validate_layout

    def check(candidate: Candidate, rules: Rules, mesh_shape: dict[str, int]) -> None:
        validate_layout(tree, mesh_shape, rules, names)

    return check


def _cache_key(config: Any, candidate: Candidate, devices: Sequence[Any]) -> str:
    blob = json.dumps(
        [
            CACHE_VERSION,
            repr(config),
            asdict(candidate),
            str(devices[0].device_kind),
            len(devices),
            jax.__version__,
            libtpu_version(),
        ],
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class _Outcome:
    report: CompileReport | None
    error: str | None = None  # the compiler's refusal (report is then its lower bound), or why nothing was compiled
    skipped: bool = False  # the budget ran out before this compile


class _Compiler:
    """Compiles (or screens) candidates for the search: an on-disk cache of reports, and one time budget shared by
    every compile (the next starts only if the seconds spent plus the mean of its kind still fit; the first candidate
    always gets its figures)."""

    def __init__(
        self, factory: StepFactory, mesh_cfg: MeshConfig, devices: list[Any], use_cache: bool, budget_s: float | None
    ) -> None:
        self.factory, self.mesh_cfg, self.devices = factory, mesh_cfg, devices
        self.use_cache, self.budget_s = use_cache, budget_s
        self.cache_path = cache_dir() / "layout_search"
        self.times: dict[str, list[float]] = {}  # seconds per compile, by kind ("full", "screen")
        self.spent = 0.0  # wall seconds of compiling so far
        self.first_done = False  # set by the search once a candidate has its figures

    def fits_budget(self, kind: str, spent: float | None = None) -> bool:
        spent = self.spent if spent is None else spent
        if self.budget_s is None or not self.first_done:
            return True
        same = self.times.get(kind) or [t for ts in self.times.values() for t in ts]
        return not same or spent + sum(same) / len(same) <= self.budget_s

    def _cached(self, config: Any, cand: Candidate, kind: str) -> tuple[Any, CompileReport | None]:
        key = _cache_key(config, cand, self.devices) + ("" if kind == "full" else f"-{kind}")
        path = self.cache_path / f"{key}.json"
        if self.use_cache and path.is_file():
            return path, CompileReport(**json.loads(path.read_text()))
        return path, None

    def _store(self, path: Any, report: CompileReport, kind: str) -> None:
        self.times.setdefault(kind, []).append(report.compile_s)
        if self.use_cache:
            self.cache_path.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(report)))
            tmp.replace(path)

    def run(self, config: Any, cand: Candidate, rules: Rules, trips: int, force: bool = False) -> _Outcome:
        """Compile (or read from the cache) the full program of one candidate; `force` ignores the budget."""
        from neo.parallel.mesh import make_mesh

        path, cached = self._cached(config, cand, "full")
        if cached is not None:
            return _Outcome(cached)
        if not force and not self.fits_budget("full"):
            return _Outcome(None, f"not compiled: the {self.budget_s:g} s compile budget is spent", skipped=True)
        mesh = make_mesh(MeshConfig(name=self.mesh_cfg.name, shape=cand.shape), self.devices)
        started = time.perf_counter()
        try:
            step, args = self.factory(config, mesh, rules)
            report = compile_report(step, args, trips)
        except LayoutError as exc:
            return _Outcome(None, str(exc))
        except Exception as exc:  # the TPU compiler rejects a program that cannot fit
            oom = compiler_oom(exc)
            if oom is None:
                raise
            seconds = time.perf_counter() - started
            self.spent += seconds
            self.times.setdefault("full", []).append(seconds)
            return _Outcome(CompileReport(oom[0], 0, oom[0], 0.0, 0.0, 0.0, seconds), f"compiler: {oom[1]}")
        report.compile_s = time.perf_counter() - started  # building the step and lowering it count too
        self.spent += report.compile_s
        self._store(path, report, "full")
        return _Outcome(report)

    def screen(
        self, config: Any, cands: Sequence[Candidate], trips: int, on_start: Callable[[int], None]
    ) -> list[_Outcome]:
        """Screen `cands` in parallel child processes (`neo.parallel.screen`), cached ones free; each starts only
        while the budget allows (seconds spent so far, this phase's wall time, plus the mean of one screen)."""
        from neo.parallel.screen import ScreenJob, ScreenOutcome, screen

        outcomes: list[_Outcome | None] = [None] * len(cands)
        todo: list[int] = []
        for i, cand in enumerate(cands):
            _, cached = self._cached(config, cand, "screen")
            if cached is not None:
                outcomes[i] = _Outcome(cached)
                self.first_done = True
            else:
                todo.append(i)
        jobs = [ScreenJob(self.factory, config, self.mesh_cfg, cands[i], trips) for i in todo]
        began = time.perf_counter()

        def start(k: int) -> bool:
            if not self.fits_budget("screen", self.spent + time.perf_counter() - began):
                spent = f"not screened: the {self.budget_s:g} s compile budget is spent"
                outcomes[todo[k]] = _Outcome(None, spent, skipped=True)
                return False
            self.first_done = True  # the first job always starts; the budget then judges the rest
            on_start(todo[k])
            return True

        def done(k: int, found: ScreenOutcome) -> None:
            if found.report is not None and found.error is None:
                self._store(self._cached(config, cands[todo[k]], "screen")[0], found.report, "screen")
            outcomes[todo[k]] = _Outcome(found.report, found.error)

        screen(jobs, min(os.cpu_count() or 1, 8), start, done)
        self.spent += time.perf_counter() - began
        return [o or _Outcome(None, "not screened") for o in outcomes]


def search(
    config: Any,
    mesh_cfg: MeshConfig,
    factory: StepFactory,
    cands: Iterable[Candidate],
    *,
    prescreen: Callable[[Candidate, Rules, dict[str, int]], None] | None = None,
    memory_limit: int | None = None,
    peak_flops: float = 0.0,
    model_flops: float = 0.0,
    hardware_flops: float = 0.0,
    loop_trips: int = 1,
    devices: Sequence[Any] | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int, Candidate, str], None] | None = None,
    budget_s: float | None = None,
    screen: bool = False,
) -> list[SearchResult]:
    """Compile every candidate that survives `prescreen` (which raises LayoutError to reject) and rank them:
    fitting candidates first, then by estimated step time, then by memory. Every candidate comes back: compiled,
    screened, rejected (`error`), or not compiled for the budget (`skipped`).

    `model_flops` is the useful work of one step over all devices (6N·tokens + attention), for MFU;
    `hardware_flops` what the devices execute for it (remat recomputation included), a floor under the compiler's
    loop-blind FLOP count; `loop_trips` the iterations of the scanned layers (see `collective_bytes`).
    With `screen` (for TPU targets compiled ahead of time by libtpu; `factory` must then be picklable), every
    candidate is ranked on the compiler's figures before code generation (`neo.parallel.screen`), several at once,
    and the leader is compiled in full (again while a screened candidate leads, within the budget) to replace its
    figures with the final ones and measure the screen's error. `progress(i, n, candidate, stage)` reports each
    compile as it starts ("screening" or "compiling").
    With `budget_s`, a compile starts only while the seconds spent plus the mean of its kind stay within it (the
    first always does, and so does the leader's first full compile; cached reports are free).
    """
    from neo.parallel.flops import bandwidth_per_device

    if devices is None:
        devices, _ = target_devices(mesh_cfg)
    devices = list(devices)
    bandwidth = bandwidth_per_device(mesh_cfg, devices)
    limit = memory_limit if memory_limit is not None else (mesh_cfg.memory_per_device or None)
    peak = peak_flops or mesh_cfg.peak_flops_per_device
    compiler = _Compiler(factory, mesh_cfg, devices, use_cache, budget_s)

    def result(cand: Candidate, outcome: _Outcome, source: str) -> SearchResult:
        report = outcome.report
        if report is None:
            return SearchResult(cand, None, False, math.inf, 0.0, outcome.error, outcome.skipped)
        if outcome.error:  # the compiler's refusal: the program does not fit
            return SearchResult(cand, report, False, math.inf, 0.0, outcome.error, source=source)
        step_time = estimate_step_time(report, peak, bandwidth, hardware_flops / len(devices))
        useful = model_flops / len(devices) if model_flops > 0 else report.flops
        mfu = useful / (step_time * peak) if step_time > 0 and peak > 0 else 0.0
        fits = limit is None or report.memory_bytes <= limit
        return SearchResult(cand, report, fits, step_time, mfu, source=source)

    def rules_of(cand: Candidate) -> tuple[Rules, list[tuple[str, int]]]:
        axes = resolve_mesh_shape(cand.shape, len(devices))
        return layout_rules(cand.layout, [a for a, _ in axes]), axes

    cand_list = list(cands)
    results: list[SearchResult] = []
    survivors: list[Candidate] = []
    for cand in cand_list:
        rules, axes = rules_of(cand)
        try:
            if prescreen is not None:
                prescreen(cand, rules, dict(axes))
        except LayoutError as exc:
            results.append(SearchResult(cand, None, False, math.inf, 0.0, str(exc)))
            continue
        survivors.append(cand)

    def report_start(i: int, stage: str) -> None:
        if progress is not None:
            progress(i, len(survivors), survivors[i], stage)

    if screen:
        outcomes = compiler.screen(config, survivors, loop_trips, lambda i: report_start(i, "screening"))
        results += [result(cand, o, "screened") for cand, o in zip(survivors, outcomes, strict=True)]
    else:
        for i, cand in enumerate(survivors):
            report_start(i, "compiling")
            results.append(result(cand, compiler.run(config, cand, rules_of(cand)[0], loop_trips), "compiled"))
            compiler.first_done = compiler.first_done or results[-1].report is not None
    results.sort(key=_rank)
    # the answer's figures are the full compile's: the leader's first full compile ignores the budget; a screened
    # leader the compiler refused is already the answer (nothing fits), as code generation only adds memory
    forced = True
    while screen and results and results[0].source == "screened" and not results[0].error:
        lead = results[0]
        if progress is not None:
            progress(0, 1, lead.candidate, "compiling the leader")
        outcome = compiler.run(config, lead.candidate, rules_of(lead.candidate)[0], loop_trips, force=forced)
        forced = False
        if outcome.report is None:  # out of budget: the leader keeps its screened figures, and says so
            break
        checked = result(lead.candidate, outcome, "compiled")
        checked.screen_memory, checked.screen_step_s = lead.report.memory_bytes, lead.step_time_s
        results[0] = checked
        results.sort(key=_rank)
    return results


def _rank(r: SearchResult) -> tuple[int, float, float]:
    """Fitting first, then by estimated step time (a compiled leader by its screened one: code generation changes the
    byte counts a little, and ranks should compare like with like), then by memory."""
    memory = r.report.memory_bytes if r.report else math.inf
    step = r.screen_step_s if r.screen_step_s is not None else r.step_time_s
    return (0 if r.fits else 1 if r.report else 2, step, memory)
