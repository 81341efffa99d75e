"""Time `neo layout search` as users run it (a fresh process, an empty compile-report cache), screened against
`--full`, and check the screen's memory figure against full compiles.

    python benchmarks/layout_search.py model=xl mesh=v3-256 [--rounds 3] [--no-full] [--check-all]

Each round runs `neo layout search OVERRIDES --budget 600` (screens every pre-screen survivor, compiles the leader
in full) and then, unless --no-full, the same with `--full` (every survivor compiled in full), each with a fresh
cache, and prints every round's wall time, how many candidates each ranked, and the medians. --check-all then
compiles every candidate in full, in this process, and prints its screened and compiled memory per device side by
side (the screen's error).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 1024**3
NEO = str(Path(sys.executable).with_name("neo"))


def timed_search(overrides: list[str], extra: list[str]) -> tuple[float, str]:
    env = {**os.environ, "NEO_CACHE_DIR": tempfile.mkdtemp(prefix="neo-layout-bench-"), "COLUMNS": "240"}
    start = time.perf_counter()
    proc = subprocess.run(
        [NEO, "layout", "search", *overrides, "--budget", "600", *extra], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"neo layout search failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    title = re.search(r"([0-9]+) of ([0-9]+) candidates ranked", proc.stdout)
    return seconds, title.group(0) if title else "?"


def check_all(overrides: list[str]) -> None:
    os.environ["NEO_CACHE_DIR"] = tempfile.mkdtemp(prefix="neo-layout-check-")
    from neo.cli.layout import prepare_devices

    prepare_devices(overrides)
    from neo.config import compose
    from neo.train.dry_run import search_layouts

    cfg = compose(overrides)
    screened = search_layouts(cfg)  # screens all, compiles the leader
    full = {r.candidate: r for r in search_layouts(cfg, full=True).results if r.report is not None}  # cache: leader
    print("candidate | screened GiB | compiled GiB | screen error | screened est. step | compiled est. step")
    for r in screened.results:
        if r.report is None or r.candidate not in full:
            continue
        f = full[r.candidate]
        memory = r.screen_memory if r.screen_memory is not None else r.report.memory_bytes
        step = r.screen_step_s if r.screen_step_s is not None else r.step_time_s
        print(
            f"{r.candidate.shape} {r.candidate.layout} | {memory / GiB:.3f} | {f.report.memory_bytes / GiB:.3f} | "
            f"{memory / f.report.memory_bytes - 1:+.1%} | {step:.3f} s | {f.step_time_s:.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-full", action="store_true", help="time only the default (screened) search")
    parser.add_argument("--check-all", action="store_true", help="compile every candidate in full: the screen's error")
    args = parser.parse_args()
    kinds = {"screened": []} if args.no_full else {"screened": [], "--full": []}
    for i in range(args.rounds):
        for kind, times in kinds.items():
            seconds, ranked = timed_search(args.overrides, ["--full"] if kind == "--full" else [])
            times.append(seconds)
            print(f"round {i + 1}, {kind}: {seconds:.1f} s ({ranked})", flush=True)
    for kind, times in kinds.items():
        print(f"median {kind}: {statistics.median(times):.1f} s over {len(times)} rounds")
    if len(kinds) == 2:
        print(f"speed-up: {statistics.median(kinds['--full']) / statistics.median(kinds['screened']):.2f}x")
    if args.check_all:
        check_all(args.overrides)


if __name__ == "__main__":
    main()
