"""Time `neo layout search` with reduced-depth proxies, and check the proxies against full compiles.

    python benchmarks/layout_search.py model=gpt3_xl mesh=v3-256 train.batch_size=512 [--budget S] [--check-all]
        [--no-proxy] [--cache-dir DIR]

Prints, per candidate, where its figures come from and the seconds its compiles took, the whole search's wall time,
and the proxies' memory error against the full compile of the leader (with --check-all, of every ranked candidate:
slow, a full compile each). Uses a fresh compile-report cache, so every figure is compiled here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

GiB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--budget", type=float, default=None, help="compile budget in seconds (default: none)")
    parser.add_argument("--check-all", action="store_true", help="also compile every extrapolated candidate in full")
    parser.add_argument("--no-proxy", action="store_true", help="compile every candidate in full instead")
    parser.add_argument("--cache-dir", help="reuse this compile-report cache (default: a fresh one)")
    args = parser.parse_args()
    os.environ["NEO_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="neo-layout-bench-")
    print(f"cache: {os.environ['NEO_CACHE_DIR']}", flush=True)

    from neo.cli.layout import prepare_devices

    prepare_devices(args.overrides)
    from neo.config import compose
    from neo.parallel.search import search
    from neo.train.dry_run import scan_length, search_layouts, step_factory

    cfg = compose(args.overrides)
    start = time.perf_counter()
    found = search_layouts(
        cfg,
        budget_s=args.budget,
        proxy=not args.no_proxy,
        progress=lambda i, n, c: print(f"{time.perf_counter() - start:.0f} s: {i + 1}/{n} {c}", flush=True),
    )
    wall = time.perf_counter() - start
    print(
        f"{cfg.mesh.name}, proxies of {found.proxy_layers} layers: {found.compiled} of {found.screened} ranked, "
        f"{wall:.0f} s wall\n{found.compiler}"
    )
    for r in found.results:
        if r.report is None:
            status = "not compiled" if r.skipped else "rejected"
            print(f"  {r.candidate.shape} {r.candidate.layout}: {status}: {r.error.removeprefix(status + ': ')}")
            continue
        error = f", proxy error {r.proxy_error:+.2%}" if r.proxy_error is not None else ""
        print(
            f"  {r.candidate.shape} {r.candidate.layout}: {r.report.memory_bytes / GiB:.3f} GiB ({r.source}), "
            f"fits {r.fits}, {r.report.compile_s:.0f} s{error}"
        )
    if not args.check_all:
        return
    from neo.model.params import abstract_variables

    trips = scan_length(abstract_variables(cfg.model)["params"])
    for r in found.results:
        if r.source != "extrapolated":
            continue
        t = time.perf_counter()
        full = search(cfg, cfg.mesh, step_factory, [r.candidate], loop_trips=trips)[0]
        seconds, error = time.perf_counter() - t, r.report.memory_bytes / full.report.memory_bytes - 1
        print(
            f"  full {r.candidate.shape} {r.candidate.layout}: {full.report.memory_bytes / GiB:.3f} GiB "
            f"in {seconds:.0f} s, proxy error {error:+.2%}"
        )


if __name__ == "__main__":
    main()
