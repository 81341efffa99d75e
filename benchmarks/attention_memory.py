"""Per-device temporaries of a gpt3_xl train step, xla vs a flash kernel, from the target's own compiler.

    python benchmarks/attention_memory.py [--meshes v4-8 v5e-8 v3-256] [--batch 8] [--model gpt3_xl]
    python benchmarks/attention_memory.py --meshes gpu-8 gpu-1 --impls xla cudnn     # with the `cuda` extra

Each row is `neo train --dry-run model=gpt3_xl mesh=M model.attention_impl=I` (no TPU or GPU needed: the `aot`
extra's libtpu compiles for the TPU topology, the `cuda` extra's XLA GPU compiler for absent H100s). The batch per
mesh is `--batch` sequences per data-parallel replica (default 8, the issue's shape) unless `--global-batch` is
given; n_ctx 2048, bf16, remat as the preset says. Prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
GiB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", nargs="*", default=["v4-8", "v5e-8", "v3-256"])
    parser.add_argument("--impls", nargs="*", default=["xla", "splash"])
    parser.add_argument("--model", default="gpt3_xl")
    parser.add_argument("--global-batch", type=int, default=0, help="train.batch_size; 0 = 8 per replica")
    parser.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides")
    args = parser.parse_args()
    from neo.config import compose
    from neo.train.dry_run import dry_run

    print("| model | mesh | attention_impl | batch | temp GiB/device | peak GiB/device | fits | compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for mesh in args.meshes:
        for impl in args.impls:
            overrides = [f"model={args.model}", f"mesh={mesh}", f"model.attention_impl={impl}", *args.extra]
            cfg = compose(overrides)
            batch = args.global_batch or 8 * _replicas(cfg)
            cfg = compose([*overrides, f"train.batch_size={batch}"])
            start = time.perf_counter()
            try:
                r = dry_run(cfg)
            except Exception as exc:  # a kernel the compiler rejects is a row too
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
                print(f"| {args.model} | {mesh} | {impl} | {batch} | failed: {first} | | | |", flush=True)
                continue
            fits = {True: "yes", False: "no", None: "?"}[r.fits] + (f" ({r.error[:60]})" if r.error else "")
            print(
                f"| {args.model} | {mesh} | {impl} | {batch} | {r.temp_bytes / GiB:.2f} | {r.peak_bytes / GiB:.2f} "
                f"| {fits} | {time.perf_counter() - start:.0f} |",
                flush=True,
            )


def _replicas(cfg) -> int:
    """Data-parallel replicas of the mesh preset: the product of the mesh axes `batch` maps to."""
    from neo.parallel.layout import axis_ways, layout_rules
    from neo.parallel.shape import resolve_mesh_shape

    shape = dict(resolve_mesh_shape(cfg.mesh.shape, cfg.mesh.devices))
    return axis_ways("batch", layout_rules(cfg.mesh.layout, list(shape)), shape)


if __name__ == "__main__":
    main()
