"""Screen layout candidates with the TPU compiler's own buffer assignment, stopping before code generation.

A full ahead-of-time TPU compile of a 1.3B-parameter train step takes ~25 s on two cores, and ~95% of it is code
generation, after the compiler has already run every HLO pass and assigned every buffer. The buffer assignment is the
memory figure that matters for ranking layouts, so a screen compiles each candidate in a child process with XLA's
dump enabled, reads the per-device memory (arguments, temporaries, all live buffers) and the partitioned program's
collectives and cost (FLOPs, bytes accessed) from the dump as soon as the buffer assignment is written, and ends the
child there: ~3 s a candidate, one core each, so candidates screen in parallel. Code generation adds temporaries of
its own (15-37% for gpt3_xl on a v3-256, measured in benchmarks/README.md), so the search still compiles its leader
in full.

Run as `python -m neo.parallel.screen DUMP_DIR`, the module is the child: it reads one pickled `ScreenJob` on
stdin, dumps into DUMP_DIR (the parent's, removed after) and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neo.parallel.compiled import CompileReport, collective_bytes
from neo.parallel.config import MeshConfig
from neo.parallel.search import Candidate

# XLA writes these dump files in this order; the last one written before code generation marks the others complete
_MARKER = "after_optimizations_after_buffer_assignment.txt"
_HLO = "after_optimizations.txt"
_BUFFERS = "after_optimizations-buffer-assignment.txt"
_USAGE = "after_optimizations-memory-usage-report.txt"
_TOTAL = re.compile(r"^Memory Space: default \(color=0\)\s*\nTotal bytes: ([0-9]+)", re.MULTILINE)
_ALLOCATION = re.compile(r"^allocation [0-9]+: size ([0-9]+), (.*)$", re.MULTILINE)


@dataclass
class ScreenJob:
    """One candidate to screen: everything the child needs to build the step (all picklable)."""

    factory: Callable[..., Any]  # a module-level `neo.parallel.search.StepFactory`
    config: Any
    mesh_cfg: MeshConfig
    candidate: Candidate
    loop_trips: int


@dataclass
class ScreenOutcome:
    report: CompileReport | None
    error: str | None = None  # a LayoutError's message, or the compiler's refusal (report is then its lower bound)


def read_dump(dump_dir: Path, loop_trips: int = 1) -> CompileReport:
    """The per-device memory and collectives of the program whose pre-codegen dump is in `dump_dir`.

    Memory is the buffer assignment's total for device memory (color 0: parameters, outputs, temporaries and
    constants, each buffer once); arguments are its parameter allocations, temporaries its preallocated-temp one.
    """
    usage = _only(dump_dir, _USAGE).read_text()
    total = _TOTAL.search(usage)
    if total is None:
        raise ValueError(f"no default memory space total in {_only(dump_dir, _USAGE)}")
    arguments = temp = 0
    for size, what in _ALLOCATION.findall(_only(dump_dir, _BUFFERS).read_text()):
        if re.match(r"parameter [0-9]+", what):
            arguments += int(size)
        elif what.startswith("preallocated-temp"):  # other memory spaces say "color N, preallocated-temp"
            temp += int(size)
    hlo = _only(dump_dir, _HLO).read_text()
    cost = hlo_cost(hlo)
    return CompileReport(
        memory_bytes=int(total.group(1)),
        argument_bytes=arguments,
        temp_bytes=temp,
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        collective_bytes=collective_bytes(hlo, loop_trips=loop_trips),
        compile_s=0.0,
        all_reduce_bytes=collective_bytes(hlo, ("all-reduce",), loop_trips),
    )


def hlo_cost(hlo_text: str) -> dict[str, float]:
    """XLA's cost analysis (flops, bytes accessed) of an optimized HLO module's text; {} where this jaxlib lacks it.

    jaxlib exposes the parser and the analysis only privately, so their absence is not an error: the search then
    falls back on the analytic FLOPs. For gpt3_xl on a v3-256 the pre-codegen module gives the final program's FLOPs
    exactly and 92% of its bytes.
    """
    try:
        import jax
        from jax._src.lib import _jax
        from jaxlib import _hlo

        module = _hlo.hlo_module_from_text(hlo_text)
        return dict(_jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module))
    except Exception:  # a jaxlib without these private entry points, or a module it cannot parse
        return {}


def _only(dump_dir: Path, suffix: str) -> Path:
    found = sorted(dump_dir.glob(f"*{suffix}"))
    if len(found) != 1:
        raise ValueError(f"expected one *{suffix} in {dump_dir}, found {len(found)}")
    return found[0]


def screen(
    jobs: Sequence[ScreenJob],
    workers: int,
    start: Callable[[int], bool],
    done: Callable[[int, ScreenOutcome], None],
) -> None:
    """Screen `jobs` in up to `workers` child processes at once. A job runs only if `start(index)` says so when its
    turn comes (the caller's budget); `done(index, outcome)` gets each result as it arrives. Both are called under
    one lock."""
    pending = iter(range(len(jobs)))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        while not failures:
            with lock:
                index = next(pending, None)
                if index is not None and not start(index):
                    continue
            if index is None:
                return
            try:
                outcome = _run_child(jobs[index])
            except BaseException as exc:  # re-raised in the caller's thread
                failures.append(exc)
                return
            with lock:
                done(index, outcome)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(workers, len(jobs))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _run_child(job: ScreenJob) -> ScreenOutcome:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="neo-screen-") as dump_dir:
        proc = subprocess.run(
            [sys.executable, "-m", "neo.parallel.screen", dump_dir],
            input=pickle.dumps(job),
            capture_output=True,
            check=False,
        )
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.decode(errors="replace").strip()[-3000:]
        raise RuntimeError(f"screening {job.candidate} failed (exit {proc.returncode}):\n{tail}")
    found = json.loads(lines[-1])
    report = CompileReport(**found["report"]) if found.get("report") else None
    if report is not None:
        report.compile_s = time.perf_counter() - started  # the child's whole life: what the screen cost
    return ScreenOutcome(report, found.get("error"))


def _child() -> None:
    """Build and lower the step, compile it with XLA's dump on, and answer as soon as the buffer assignment is out."""
    from neo.runtime import prepare_aot

    prepare_aot()  # before JAX starts its backends
    job: ScreenJob = pickle.load(sys.stdin.buffer)
    from neo.errors import LayoutError
    from neo.parallel.compiled import compiler_oom, report_of
    from neo.parallel.layout import layout_rules
    from neo.parallel.mesh import make_mesh
    from neo.parallel.shape import resolve_mesh_shape
    from neo.parallel.targets import target_devices

    answering = threading.Lock()

    def answer(**found: Any) -> None:
        with answering:  # the watcher and the compile may both finish: the first answer is the one
            sys.stdout.write(json.dumps(found) + "\n")
            sys.stdout.flush()
            os._exit(0)  # ends the compile too, when it is still generating code

    devices, _ = target_devices(job.mesh_cfg)
    axes = resolve_mesh_shape(job.candidate.shape, len(devices))
    rules = layout_rules(job.candidate.layout, [a for a, _ in axes])
    mesh = make_mesh(MeshConfig(name=job.mesh_cfg.name, shape=job.candidate.shape), devices)
    try:
        step, args = job.factory(job.config, mesh, rules)
        lowered = step.lower(*args)
    except LayoutError as exc:
        answer(error=str(exc))
    dump_dir = Path(sys.argv[1])

    def watch() -> None:
        while not list(dump_dir.glob(f"*{_MARKER}")):
            time.sleep(0.02)
        answer(report=asdict(read_dump(dump_dir, job.loop_trips)))

    threading.Thread(target=watch, daemon=True).start()
    try:
        compiled = lowered.compile(compiler_options={"xla_dump_to": str(dump_dir)})
    except Exception as exc:  # the TPU compiler refuses a program too big for device memory
        oom = compiler_oom(exc)
        if oom is None:
            raise
        report = CompileReport(oom[0], 0, oom[0], 0.0, 0.0, 0.0, 0.0)
        answer(report=asdict(report), error=f"compiler: {oom[1]}")
    answer(report=asdict(report_of(compiled, 0.0, job.loop_trips)))  # a compiler that wrote no marker: all of it


if __name__ == "__main__":
    _child()
