"""Where the train step's time could go at best: every matrix product of the compiled step, timed alone.

Compiles neo's train step for the `benchmarks/train.py` model, reads each `dot` out of the optimised HLO (operand
shapes, contracting and batch dimensions), times that product by itself as a jitted `lax.dot_general`, and sums
them, counting a dot in the scanned layers once per layer and one in the loss loop once per chunk. The sum is the
step's time if everything but the matrix products were free: the gap to the measured step is elementwise work,
copies and scheduling.

`--torch` also times every product in PyTorch (its operands laid out for one `torch.bmm`, as contiguous copies made
before the clock starts), in rounds that alternate with XLA's: the same FLOPs on the library the transformers
baseline uses, so the floor of each side's step can be compared.

    python benchmarks/train_dots.py [--slowest 12] [--torch] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from train import BATCH, N_CTX, N_VOCAB, bench_config

TYPES = {"f32": "float32", "bf16": "bfloat16"}  # HLO's element types by the name JAX and PyTorch give them
DOT = re.compile(r"= (\w+)\[[\d,]*\]\{[^}]*\} dot\((%[\w.\-]+), (%[\w.\-]+)\), ([^\n]*)")


def _dims(text: str, key: str) -> tuple[int, ...]:
    m = re.search(key + r"=\{([\d,]*)\}", text)
    return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def hlo_dots(hlo: str) -> list[dict]:
    """Every dot of an optimised HLO module: operand shapes and types, result type, dimension numbers, where it sits."""
    dots = []
    for comp in re.split(r"\n(?=\S)", hlo):  # computations start at column 0
        for m in DOT.finditer(comp):
            result, lhs, rhs, rest = m.groups()
            shapes, types = [], []
            for name in (lhs, rhs):
                s = re.search(re.escape(name) + r" = (\w+)\[([\d,]*)\]", comp)
                types.append(s.group(1))
                shapes.append(tuple(int(d) for d in s.group(2).split(",") if d))
            op = re.search(r'op_name="([^"]*)"', rest)
            dots.append(
                dict(
                    lhs=shapes[0],
                    rhs=shapes[1],
                    types=(*types, result),  # lhs, rhs, result: bf16 x bf16 -> f32 in a bfloat16 step
                    contract=(_dims(rest, "lhs_contracting_dims"), _dims(rest, "rhs_contracting_dims")),
                    batch=(_dims(rest, "lhs_batch_dims"), _dims(rest, "rhs_batch_dims")),
                    op=op.group(1) if op else "",
                )
            )
    return dots


def dot_flops(d: dict) -> float:
    free_rhs = [n for i, n in enumerate(d["rhs"]) if i not in d["contract"][1] + d["batch"][1]]
    return float(2 * np.prod(d["lhs"]) * np.prod(free_rhs))


def _median_time(run: Callable[[], Any], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_dot(d: dict, repeat: int = 9) -> float:
    """Median seconds of one dot alone, as XLA runs it."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    lhs, rhs, result = (jnp.dtype(TYPES[t]) for t in d["types"])
    x, y = (jnp.asarray(rng.random(s, dtype=np.float32), t) for s, t in ((d["lhs"], lhs), (d["rhs"], rhs)))
    dims = (d["contract"], d["batch"])
    f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims, preferred_element_type=result))
    return _median_time(lambda: f(x, y).block_until_ready(), repeat)


def time_dot_torch(d: dict, repeat: int = 9) -> float:
    """Median seconds of the same product in PyTorch: [batch, free, contract] @ [batch, contract, free] by bmm, in
    the operands' type (bf16 operands give a bf16 result, as under autocast)."""
    import torch

    def as_bmm(shape: tuple[int, ...], contract: tuple[int, ...], batch: tuple[int, ...], lhs: bool, dtype: Any) -> Any:
        free = [i for i in range(len(shape)) if i not in contract + batch]
        size = lambda dims: int(np.prod([shape[i] for i in dims]))
        order = [*batch, *free, *contract] if lhs else [*batch, *contract, *free]
        rows, cols = (size(free), size(contract)) if lhs else (size(contract), size(free))
        x = torch.rand(*shape, dtype=dtype).permute(*order).contiguous()
        return x.reshape(size(batch), rows, cols)

    x = as_bmm(d["lhs"], d["contract"][0], d["batch"][0], True, getattr(torch, TYPES[d["types"][0]]))
    y = as_bmm(d["rhs"], d["contract"][1], d["batch"][1], False, getattr(torch, TYPES[d["types"][1]]))
    with torch.no_grad():
        return _median_time(lambda: torch.bmm(x, y), repeat)


def _trips(op: str, layers: int, loss_chunks: int) -> int:
    """How often a dot runs per step: once per layer in the scanned layers, once per chunk in the head's loss loop."""
    if "/while/" not in op:
        return 1
    return layers if "GPTNeo._run" in op else loss_chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowest", type=int, default=12, help="list this many of the slowest products")
    parser.add_argument("--torch", action="store_true", help="time the same products in PyTorch too")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all products (alternating with --torch)")
    parser.add_argument("--precision", default="float32", help="model.precision of the step (float32, bfloat16)")
    args = parser.parse_args()
    import jax

    from neo.train.session import build_session

    cfg = bench_config(f"model.precision={args.precision}")
    session = build_session(cfg, devices=jax.devices()[:1])
    state = session.fresh_state()
    batch = session.global_batch(np.random.default_rng(0).integers(0, N_VOCAB, (BATCH, N_CTX + 1)))
    hlo = session.train_step.jitted.lower(state, batch).compile().as_text()
    layers = cfg.model.n_layer // cfg.model.scan_period()  # trips of the scanned layer loop
    dots = hlo_dots(hlo)
    trips = [_trips(d["op"], layers, session.loss_chunks) for d in dots]
    flops = [n * dot_flops(d) for n, d in zip(trips, dots, strict=True)]
    total_f = sum(flops)
    libraries = {"XLA": time_dot, **({"PyTorch": time_dot_torch} if args.torch else {})}
    totals: dict[str, list[float]] = {name: [] for name in libraries}
    seconds: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name, timer in libraries.items() if r % 2 == 0 else reversed(libraries.items()):
            seconds[name] = [n * timer(d) for n, d in zip(trips, dots, strict=True)]
            totals[name].append(sum(seconds[name]))
    xla = seconds["XLA"]
    print(f"{len(dots)} products in the step; the slowest in XLA (time per step, trips, shapes, rate):")
    for i in sorted(range(len(dots)), key=lambda i: -xla[i])[: args.slowest]:
        d = dots[i]
        where = d["op"].split("/")[-2] if "/" in d["op"] else d["op"]
        other = f", PyTorch {flops[i] / seconds['PyTorch'][i] / 1e9:4.0f}" if args.torch else ""
        print(
            f"  {xla[i] * 1e3:7.1f} ms  {trips[i]}x  {d['lhs']} . {d['rhs']} contract {d['contract']}"
            f" batch {d['batch']}  {flops[i] / xla[i] / 1e9:4.0f} GFLOP/s{other}  [{where[:40]}]"
        )
    tokens = BATCH * N_CTX
    for name, runs in totals.items():
        total_s = statistics.median(runs)
        rounds = " / ".join(f"{t * 1e3:.0f}" for t in runs)
        print(
            f"{name}: all products {total_f / 1e9:.1f} GFLOP in {total_s * 1e3:.0f} ms (rounds {rounds}; "
            f"{total_f / total_s / 1e9:.0f} GFLOP/s): a step of nothing else would run {tokens / total_s:,.0f} tokens/s"
        )
    if args.torch:
        ratio = statistics.median(totals["XLA"]) / statistics.median(totals["PyTorch"])
        print(f"PyTorch / XLA product rate: {ratio:.2f}")


if __name__ == "__main__":
    main()
