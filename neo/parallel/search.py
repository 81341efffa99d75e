"""Toward `neo layout search`: enumerate (mesh shape, layout) candidates, pre-screen them cheaply, and compile the
real step against abstract inputs on the target devices to read per-device memory and cost.

The trainer supplies a *step factory*: `factory(config, mesh, rules) -> (jitted_step, abstract_args)` where
`jitted_step.lower(*abstract_args).compile()` compiles without allocating (args are `jax.ShapeDtypeStruct`s with
shardings). This module never imports the model or the trainer.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jax

from neo.errors import LayoutError
from neo.parallel.compiled import CompileReport, compile_report, compiler_oom, estimate_step_time
from neo.parallel.config import MeshConfig
from neo.parallel.layout import Rules, axis_ways, layout_rules, parse_layout
from neo.parallel.shape import format_mesh_shape, resolve_mesh_shape
from neo.parallel.targets import libtpu_version, target_devices
from neo.storage import cache_dir

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
    scoring = _Scoring(
        peak=peak_flops or mesh_cfg.peak_flops_per_device,
        bandwidth=bandwidth_per_device(mesh_cfg, devices),
        limit=memory_limit if memory_limit is not None else (mesh_cfg.memory_per_device or None),
        model_flops=model_flops,
        hardware_flops=hardware_flops,
        n_devices=len(devices),
    )
    compiler = _Compiler(factory, mesh_cfg, devices, use_cache, budget_s)
    results, survivors = _prescreened(cands, prescreen, len(devices))

    def report_start(i: int, stage: str) -> None:
        if progress is not None:
            progress(i, len(survivors), survivors[i], stage)

    if screen:
        outcomes = compiler.screen(config, survivors, loop_trips, lambda i: report_start(i, "screening"))
        results += [scoring.result(cand, o, "screened") for cand, o in zip(survivors, outcomes, strict=True)]
    else:
        for i, cand in enumerate(survivors):
            report_start(i, "compiling")
            outcome = compiler.run(config, cand, _rules_of(cand, len(devices))[0], loop_trips)
            results.append(scoring.result(cand, outcome, "compiled"))
            compiler.first_done = compiler.first_done or outcome.report is not None
    results.sort(key=_rank)
    if screen:
        _compile_screened_leader(results, compiler, config, scoring, loop_trips, progress)
    return results


@dataclass(frozen=True)
class _Scoring:
    """Turns a candidate's compile outcome into its SearchResult: fit, estimated step time and MFU."""

    peak: float
    bandwidth: tuple[float, float]  # (memory, interconnect) bytes/s per device
    limit: int | None
    model_flops: float
    hardware_flops: float
    n_devices: int

    def result(self, cand: Candidate, outcome: _Outcome, source: str) -> SearchResult:
        report = outcome.report
        if report is None:
            return SearchResult(cand, None, False, math.inf, 0.0, outcome.error, outcome.skipped)
        if outcome.error:  # the compiler's refusal: the program does not fit
            return SearchResult(cand, report, False, math.inf, 0.0, outcome.error, source=source)
        step_time = estimate_step_time(report, self.peak, self.bandwidth, self.hardware_flops / self.n_devices)
        useful = self.model_flops / self.n_devices if self.model_flops > 0 else report.flops
        mfu = useful / (step_time * self.peak) if step_time > 0 and self.peak > 0 else 0.0
        fits = self.limit is None or report.memory_bytes <= self.limit
        return SearchResult(cand, report, fits, step_time, mfu, source=source)


def _rules_of(cand: Candidate, n_devices: int) -> tuple[Rules, list[tuple[str, int]]]:
    axes = resolve_mesh_shape(cand.shape, n_devices)
    return layout_rules(cand.layout, [a for a, _ in axes]), axes


def _prescreened(
    cands: Iterable[Candidate],
    prescreen: Callable[[Candidate, Rules, dict[str, int]], None] | None,
    n_devices: int,
) -> tuple[list[SearchResult], list[Candidate]]:
    """(the candidates `prescreen` rejects, as results; the ones left to compile)."""
    rejected: list[SearchResult] = []
    survivors: list[Candidate] = []
    for cand in cands:
        rules, axes = _rules_of(cand, n_devices)
        try:
            if prescreen is not None:
                prescreen(cand, rules, dict(axes))
        except LayoutError as exc:
            rejected.append(SearchResult(cand, None, False, math.inf, 0.0, str(exc)))
            continue
        survivors.append(cand)
    return rejected, survivors


def _compile_screened_leader(
    results: list[SearchResult],
    compiler: _Compiler,
    config: Any,
    scoring: _Scoring,
    loop_trips: int,
    progress: Callable[[int, int, Candidate, str], None] | None,
) -> None:
    """Compile the screened leader in full, again while a screened candidate leads (within the budget), so the
    answer's figures are the full compile's. The leader's first full compile ignores the budget; a screened leader the
    compiler refused is already the answer (nothing fits), as code generation only adds memory."""
    forced = True
    while results and results[0].source == "screened" and not results[0].error:
        lead = results[0]
        if progress is not None:
            progress(0, 1, lead.candidate, "compiling the leader")
        rules = _rules_of(lead.candidate, scoring.n_devices)[0]
        outcome = compiler.run(config, lead.candidate, rules, loop_trips, force=forced)
        forced = False
        if outcome.report is None:  # out of budget: the leader keeps its screened figures, and says so
            return
        checked = scoring.result(lead.candidate, outcome, "compiled")
        assert lead.report is not None
        checked.screen_memory, checked.screen_step_s = lead.report.memory_bytes, lead.step_time_s
        results[0] = checked
        results.sort(key=_rank)


def _rank(r: SearchResult) -> tuple[int, float, float]:
    """Fitting first, then by estimated step time (a compiled leader by its screened one: code generation changes the
    byte counts a little, and ranks should compare like with like), then by memory."""
    memory = r.report.memory_bytes if r.report else math.inf
    step = r.screen_step_s if r.screen_step_s is not None else r.step_time_s
    return (0 if r.fits else 1 if r.report else 2, step, memory)
