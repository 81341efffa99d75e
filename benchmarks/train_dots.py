"""Where the train step's time could go at best: every matrix product of the compiled step, timed alone.

Compiles neo's train step for the `benchmarks/train.py` model, reads each `dot` out of the optimised HLO (operand
shapes, contracting and batch dimensions), times that product by itself as a jitted `lax.dot_general`, and sums
them, counting the dots inside the scanned layers once per layer. The sum is the step's time if everything but the
matrix products were free: the gap to the measured step is elementwise work, copies and scheduling.

    python benchmarks/train_dots.py [--slowest 12]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np
from train import BATCH, N_CTX, N_VOCAB, bench_config

DOT = re.compile(r"= \w+\[[\d,]*\]\{[^}]*\} dot\((%[\w.\-]+), (%[\w.\-]+)\), ([^\n]*)")


def _dims(text: str, key: str) -> tuple[int, ...]:
    m = re.search(key + r"=\{([\d,]*)\}", text)
    return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def hlo_dots(hlo: str) -> list[dict]:
    """Every dot of an optimised HLO module: operand shapes, dimension numbers, and whether it sits in a loop."""
    dots = []
    for comp in re.split(r"\n(?=\S)", hlo):  # computations start at column 0
        for m in DOT.finditer(comp):
            lhs, rhs, rest = m.groups()
            shapes = []
            for name in (lhs, rhs):
                s = re.search(re.escape(name) + r" = \w+\[([\d,]*)\]", comp)
                shapes.append(tuple(int(d) for d in s.group(1).split(",") if d))
            op = re.search(r'op_name="([^"]*)"', rest)
            dots.append(
                dict(
                    lhs=shapes[0],
                    rhs=shapes[1],
                    contract=(_dims(rest, "lhs_contracting_dims"), _dims(rest, "rhs_contracting_dims")),
                    batch=(_dims(rest, "lhs_batch_dims"), _dims(rest, "rhs_batch_dims")),
                    op=op.group(1) if op else "",
                )
            )
    return dots


def time_dot(d: dict, repeat: int = 9) -> tuple[float, float]:
    """(median seconds, FLOPs) of one dot alone."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    x, y = (jnp.asarray(rng.random(s, dtype=np.float32)) for s in (d["lhs"], d["rhs"]))
    f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (d["contract"], d["batch"])))
    f(x, y).block_until_ready()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f(x, y).block_until_ready()
        times.append(time.perf_counter() - t)
    free_rhs = [n for i, n in enumerate(d["rhs"]) if i not in d["contract"][1] + d["batch"][1]]
    flops = 2 * np.prod(d["lhs"]) * np.prod(free_rhs)
    return statistics.median(times), float(flops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowest", type=int, default=12, help="list this many of the slowest products")
    args = parser.parse_args()
    import jax

    from neo.train.session import build_session

    cfg = bench_config()
    session = build_session(cfg, devices=jax.devices()[:1])
    state = session.fresh_state()
    batch = session.global_batch(np.random.default_rng(0).integers(0, N_VOCAB, (BATCH, N_CTX + 1)))
    hlo = session.train_step.jitted.lower(state, batch).compile().as_text()
    layers = cfg.model.n_layer // cfg.model.scan_period()  # trips of the scanned layer loop
    rows = []
    for d in hlo_dots(hlo):
        seconds, flops = time_dot(d)
        trips = layers if "/while/" in d["op"] else 1
        rows.append((trips * seconds, trips * flops, trips, d))
    total_s, total_f = sum(r[0] for r in rows), sum(r[1] for r in rows)
    print(f"{len(rows)} products in the step; the slowest (time per step, trips, shapes, rate):")
    for s, f, trips, d in sorted(rows, key=lambda r: -r[0])[: args.slowest]:
        where = d["op"].split("/")[-2] if "/" in d["op"] else d["op"]
        print(
            f"  {s * 1e3:7.1f} ms  {trips}x  {d['lhs']} . {d['rhs']} contract {d['contract']} batch {d['batch']}"
            f"  {f / s / 1e9:4.0f} GFLOP/s  [{where[:40]}]"
        )
    tokens = BATCH * N_CTX
    print(
        f"all products: {total_f / 1e9:.1f} GFLOP in {total_s * 1e3:.0f} ms ({total_f / total_s / 1e9:.0f} GFLOP/s); "
        f"a step of nothing else would run {tokens / total_s:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
