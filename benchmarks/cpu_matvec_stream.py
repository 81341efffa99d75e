"""How fast neo's CPU kernel (`neo/model/cpu_matvec.cc`) streams weights at batch 1, against XLA's float32 matvec.

One batch-1 decode step's products in one jitted program: 12 layers of four [768, 768] matrices, a [3072, 768] and a
[768, 3072], then the [50257, 768] logits (neo_125M's shapes, every matrix distinct, so each is read from memory as a
decode step reads it). Weights as float32 (XLA's dot, and the kernel: `float32-kernel`), bfloat16 and int8 (the
kernel); the kinds alternate for
`--rounds` rounds; the median time and the bytes of weight per second are printed. `--source FILE` builds and times a
variant of the kernel's source instead (run once per variant: a process registers one kernel).

    python benchmarks/cpu_matvec_stream.py [--rounds 7] [--source variant.cc]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

SHAPES = [(768, 768)] * 4 + [(3072, 768), (768, 3072)]  # [out, in] of one layer's products
SHAPES = SHAPES * 12 + [(50257, 768)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--source", type=Path, help="a variant of neo/model/cpu_matvec.cc to build and time")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from neo.model import cpu_matvec
    from neo.model.quantize import Bf16Weight, Int8Weight

    if args.source is not None:
        cpu_matvec.SOURCE = args.source.resolve()
    if not cpu_matvec.ready():
        raise SystemExit("the kernel could not be built here (see the warning)")
    rng = np.random.default_rng(0)
    weights = {"float32": [jnp.asarray(rng.standard_normal((k, o), np.float32)) for o, k in SHAPES]}  # XLA: [in, out]
    weights["float32-kernel"] = [jnp.asarray(w.T) for w in weights["float32"]]  # the decoding layout: [out, in]
    weights["bfloat16"] = [Bf16Weight(jnp.asarray(w.T, jnp.bfloat16)) for w in weights["float32"]]
    weights["int8"] = [
        Int8Weight(jnp.asarray(rng.integers(-127, 128, (o, k)), jnp.int8), jnp.ones((o,), jnp.float32))
        for o, k in SHAPES
    ]
    nbytes = {kind: sum(leaf.nbytes for leaf in jax.tree.leaves(ws)) for kind, ws in weights.items()}

    def products(ws: list, x: jax.Array, xla: bool) -> jax.Array:
        outs = []
        for w, (_, k) in zip(ws, SHAPES, strict=True):
            y = x[:, :k] @ w if xla else cpu_matvec.rows_times(x[:, :k], w)
            outs.append(y[:, :8])  # a few outputs each: the program returns little
        return jnp.concatenate(outs, axis=1)

    x = jnp.ones((1, 3072), jnp.float32)
    products = jax.jit(products, static_argnames="xla")
    for kind, ws in weights.items():
        products(ws, x, xla=kind == "float32").block_until_ready()
    seconds: dict[str, list[float]] = {kind: [] for kind in weights}
    for r in range(args.rounds):
        for kind, ws in weights.items():
            start = time.perf_counter()
            for _ in range(5):
                y = products(ws, x, xla=kind == "float32")
            y.block_until_ready()
            seconds[kind].append((time.perf_counter() - start) / 5)
        print(f"round {r + 1}: " + ", ".join(f"{k} {s[-1] * 1e3:.2f} ms" for k, s in seconds.items()), flush=True)
    for kind, s in seconds.items():
        median = statistics.median(s)
        rate = nbytes[kind] / median / 1e9
        print(f"{kind}: {nbytes[kind] / 2**20:.0f} MiB, median {median * 1e3:.2f} ms, {rate:.1f} GB/s of weight")


if __name__ == "__main__":
    main()
