"""What a compiled program costs per device, read from the compiler: memory, FLOPs, bytes, and the collectives in its
HLO text; a roofline estimate of its step time; and the TPU compiler's out-of-memory refusal read as an answer."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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

    @property
    def cost_known(self) -> bool:
        """Whether the compiler counted FLOPs or bytes (XLA's GPU compiler does not, ahead of time): without them a
        step estimate is only the model's FLOPs at peak plus communication, a lower bound."""
        return self.flops > 0 or self.bytes_accessed > 0


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
