"""Reduced-depth proxies for the layout search: compile the step with two shallower layer stacks and extrapolate
the compiler's figures linearly in depth to the full model.

Under `scan` every period of the layer pattern adds the same parameters, optimizer state, gradients and saved
activations, and runs the same body once more, so per-device memory, FLOPs, bytes and collectives are affine in the
number of scan iterations: two proxies with a real loop (two or more iterations each; XLA inlines a one-trip loop and
schedules it differently) fix the line. That is an assumption, and the TPU compiler can break it by scheduling a
short loop differently from a long one (prefetching more of the next iterations' weights, say), so the search
compiles its answer in full and reports the proxies' error. Proxies save compile time only as far as it grows with
depth; under scan it grows little (the loop body compiles once), so the search uses them on request
(`neo layout search --proxy`).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neo.parallel.search import CompileReport

PROXY_TRIPS = (2, 3)  # scan iterations of the two proxies
_LINEAR = ("memory_bytes", "argument_bytes", "temp_bytes", "flops", "bytes_accessed", "collective_bytes")


def extrapolate(low: CompileReport, high: CompileReport, trips: tuple[int, int], target_trips: int) -> CompileReport:
    """The report of a `target_trips`-iteration stack, on the line through two proxies of `trips` iterations.

    `compile_s` is what the two proxies cost together (what was spent, not what a full compile would take).
    """
    a, b = trips
    if a == b:
        raise ValueError(f"two proxies of different depth are needed, got {trips}")
    t = (target_trips - a) / (b - a)

    def line(name: str) -> float:
        lo, hi = getattr(low, name), getattr(high, name)
        return lo + (hi - lo) * t

    values = {f.name: line(f.name) for f in fields(low) if f.name in (*_LINEAR, "all_reduce_bytes")}
    for name in ("memory_bytes", "argument_bytes", "temp_bytes"):
        values[name] = max(0, round(values[name]))
    return replace(low, **values, compile_s=low.compile_s + high.compile_s)


def proxy_trips(full_trips: int) -> tuple[int, int] | None:
    """The proxies' depths for a stack of `full_trips` iterations, or None when compiling it in full is as cheap."""
    return PROXY_TRIPS if full_trips > max(PROXY_TRIPS) else None
