"""Is change B faster than A? Two train steps of the benchmark model in one process, timed in alternating steps.

On a shared 2-core machine the step time drifts by ±5% between processes, more than most changes are worth; steps
that alternate within one process see the same drift, so the paired differences resolve 1–2%. A and B differ by
Hydra overrides, by XLA compiler options, or by A using an attention neo's float32 CPU training used before:
`--a-attention blocks`, `neo.model.kernels.cpu.causal_attention` (XLA's products in 4 query blocks, backward
written out) in place of neo's fused kernel; `--a-attention xla`, `jax.nn.dot_product_attention` in 8 query blocks,
backward derived by XLA.

    python benchmarks/train_ab.py --b train.loss_chunks=8 [--a ...] [--b-xla name=value,...] [--steps 20]
    python benchmarks/train_ab.py --a-attention blocks             # or xla
    python benchmarks/train_ab.py --a model.attention_impl=xla    # the whole xla kernel choice against cpu
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from train import BATCH, N_CTX, N_VOCAB, bench_config


def _xla_attention(q: Any, k: Any, v: Any, blocks: int, window: int | None) -> Any:
    import jax
    import jax.numpy as jnp

    from neo.model.kernels.xla import query_blocks

    length = q.shape[1]
    blocks = query_blocks(length)
    size = length // blocks
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    mask = (j <= i) if window is None else (j <= i) & (i - j < window)
    outs = []
    for n in range(blocks):
        start, end = n * size, (n + 1) * size
        first = 0 if window is None else max(0, start - window + 1)
        block_mask = jnp.asarray(mask[start:end, first:end])[None, None]
        outs.append(
            jax.nn.dot_product_attention(q[:, start:end], k[:, first:end], v[:, first:end], mask=block_mask, scale=1.0)
        )
    return jnp.concatenate(outs, axis=1)


def _options(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        out[key] = {"true": True, "false": False}.get(value, int(value) if value.isdigit() else value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="*", default=[], help="Hydra overrides of A")
    parser.add_argument("--b", nargs="*", default=[], help="Hydra overrides of B")
    parser.add_argument("--a-xla", default="", help="XLA compiler options of A: name=value,...")
    parser.add_argument("--b-xla", default="", help="XLA compiler options of B")
    parser.add_argument("--a-attention", choices=["neo", "blocks", "xla"], default="neo", help="A's attention")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each")
    args = parser.parse_args()
    import flax.linen as nn
    import jax

    import neo.model.kernels.cpu as attention
    from neo.model import cpu_matvec
    from neo.train.session import build_session

    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, N_VOCAB, (BATCH, N_CTX + 1)) for _ in range(2)]
    runs: dict[str, dict[str, Any]] = {}
    neo_attention, fused = attention.causal_attention, cpu_matvec.attends
    for name, extra, xla, kind in (("A", args.a, args.a_xla, args.a_attention), ("B", args.b, args.b_xla, "neo")):
        attention.causal_attention = _xla_attention if kind == "xla" else neo_attention  # read when traced
        cpu_matvec.attends = fused if kind == "neo" else (lambda *operands: False)
        session = build_session(bench_config(*extra), devices=jax.devices()[:1])
        batches = [session.global_batch(t) for t in tokens]
        state = session.fresh_state()
        with jax.set_mesh(session.mesh), nn.logical_axis_rules(session.rules):
            step = session.train_step.jitted.lower(state, batches[0]).compile(compiler_options=_options(xla) or None)
        for i in range(2):  # warm-up
            state, metrics = step(state, batches[i])
        jax.block_until_ready(metrics["loss"])
        runs[name] = {"step": step, "state": state, "batches": batches, "times": []}
    attention.causal_attention, cpu_matvec.attends = neo_attention, fused
    for i in range(args.steps):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            run = runs[name]
            start = time.perf_counter()
            run["state"], metrics = run["step"](run["state"], run["batches"][i % 2])
            jax.block_until_ready(metrics["loss"])
            run["times"].append(time.perf_counter() - start)
            run["loss"] = float(metrics["loss"])
    a, b = (np.asarray(runs[n]["times"]) * 1e3 for n in ("A", "B"))
    diff = (b - a) / a
    for name, t in (("A", a), ("B", b)):
        print(f"{name}: fastest {t.min():,.0f} ms, median {np.median(t):,.0f} ms, last loss {runs[name]['loss']:.6f}")
    print(
        f"B - A: median {np.median(b - a):+,.0f} ms ({np.median(diff) * 100:+.1f}%), "
        f"B faster in {(b < a).sum()} of {len(a)} pairs"
    )


if __name__ == "__main__":
    main()
