"""Float32 training attention on CPU: neo's fused kernel against XLA's products in query blocks, one layer.

Times the forward pass and forward + backward of `neo.model.kernels.cpu.fused_attention` (`cpu_attention.cc`) and
of `causal_attention` in 4 query blocks (what float32 CPU training ran before, and runs where the kernel is not
built) on the benchmark model's attention shape ([8, 256, 6, 64], causal), rounds alternating.

    python benchmarks/attention_cpu.py [--rounds 3] [--window 256]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np


def _median_ms(f: Callable, args: tuple, calls: int = 30) -> float:
    import jax

    jax.block_until_ready(f(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=None, help="local attention window (default: global)")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp

    from neo.model import cpu_matvec
    from neo.model.kernels.cpu import causal_attention, fused_attention

    rng = np.random.default_rng(0)
    q, k, v, d_out = (jnp.asarray(rng.standard_normal((8, 256, 6, 64), dtype=np.float32)) for _ in range(4))
    if not cpu_matvec.attends(q, k, v):
        raise SystemExit("neo's CPU kernels are not built here (no C++ compiler, or NEO_CPU_KERNELS=0)")
    forms = {
        "fused kernel": lambda q, k, v: fused_attention(q, k, v, args.window),
        "XLA, 4 query blocks": lambda q, k, v: causal_attention(q, k, v, 4, args.window),
    }
    timed: dict[str, dict[str, list[float]]] = {name: {"forward": [], "forward + backward": []} for name in forms}
    programs = {}
    for name, f in forms.items():

        def both(q, k, v, f=f):
            out, vjp = jax.vjp(f, q, k, v)
            return out, vjp(d_out)

        programs[name] = {"forward": jax.jit(f), "forward + backward": jax.jit(both)}
    for r in range(args.rounds):
        for name in forms if r % 2 == 0 else reversed(list(forms)):
            for part, program in programs[name].items():
                timed[name][part].append(_median_ms(program, (q, k, v)))
    for name, parts in timed.items():
        for part, ms in parts.items():
            rounds = " / ".join(f"{t:.1f}" for t in ms)
            print(f"{name:20s} {part:19s} {statistics.median(ms):6.1f} ms  (rounds {rounds})")


if __name__ == "__main__":
    main()
