"""Training throughput on this machine: neo's jitted train step vs Hugging Face GPTNeoForCausalLM (PyTorch, AdamW).

Same model (6 layers, 384 wide, 6 heads, n_ctx 256, 8192 vocab, all-global attention), same batch (8), same
thread count, random tokens. Prints tokens/s and MFU against the measured fp32 matmul peak of this machine.

Each measurement runs in a fresh process (neo's XLA thread pool and allocator state never share a process with
PyTorch's), the implementations taking turns for `--rounds` rounds; the ratio is of the medians. neo runs as the
`neo` command runs it, with malloc on transparent huge pages (`neo.runtime`); PyTorch is measured as it comes and,
for comparison, with the same allocator setting.

    python benchmarks/train.py [--steps 20] [--warmup 3] [--rounds 3] [--skip-torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

N_LAYER, N_EMBD, N_HEAD, N_CTX, N_VOCAB, BATCH = 6, 384, 6, 256, 8192, 8


# The benchmark model and batch as Hydra overrides (also used by train_e2e.py for the `neo train` command).
BENCH_OVERRIDES = [
    "model=tiny",
    f"model.n_layer={N_LAYER}",
    f"model.n_embd={N_EMBD}",
    f"model.n_head={N_HEAD}",
    f"model.n_ctx={N_CTX}",
    f"model.n_vocab={N_VOCAB}",
    f'model.attention_types=[[["global"],{N_LAYER}]]',
    f"train.batch_size={BATCH}",
    "optimizer.warmup_steps=0",
]


def bench_config(*overrides: str) -> Any:
    """neo's config of the benchmark model, plus any Hydra `overrides` (also used by train_dots.py, train_ab.py)."""
    from neo.config import compose

    return compose([*BENCH_OVERRIDES, *overrides])


def bench_neo(steps: int, warmup: int, precision: str = "float32") -> tuple[float, float]:
    import jax

    from neo.train.metrics import flops_per_token
    from neo.train.session import build_session

    cfg = bench_config(f"model.precision={precision}")
    session = build_session(cfg, devices=jax.devices()[:1])
    state = session.fresh_state()
    rng = np.random.default_rng(0)
    batches = [session.global_batch(rng.integers(0, N_VOCAB, (BATCH, N_CTX + 1))) for _ in range(4)]
    for i in range(warmup):
        state, metrics = session.train_step(state, batches[i % 4])
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = session.train_step(state, batches[i % 4])
    jax.block_until_ready(metrics["loss"])
    tps = steps * BATCH * N_CTX / (time.perf_counter() - start)
    return tps, flops_per_token(cfg.model, session.n_params)


def torch_model() -> Any:
    """The benchmark model as transformers' GPTNeoForCausalLM, in training mode, on all cores."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    config = GPTNeoConfig(
        vocab_size=N_VOCAB,
        max_position_embeddings=N_CTX,
        hidden_size=N_EMBD,
        num_layers=N_LAYER,
        num_heads=N_HEAD,
        attention_types=[[["global"], N_LAYER]],
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPTNeoForCausalLM(config).train()


def bench_torch(steps: int, warmup: int) -> float:
    import torch

    model = torch_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, N_VOCAB, (BATCH, N_CTX + 1))

    def step() -> None:
        out = model(tokens[:, :-1], labels=tokens[:, :-1])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH * N_CTX / (time.perf_counter() - start)


def _measure(impl: str, steps: int, warmup: int, huge_pages: bool) -> dict:
    """One measurement in a fresh Python process: {"tps": tokens/s, "fpt": model FLOPs per token}."""
    from neo.runtime import huge_page_env

    env = (huge_page_env() if huge_pages else None) or dict(os.environ)
    cmd = [sys.executable, __file__, "--one", impl, "--steps", str(steps), "--warmup", str(warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process measurements of each implementation")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--one", choices=["neo", "torch"], help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32", help="neo's model.precision")
    args = parser.parse_args()
    if args.one == "neo":
        tps, fpt = bench_neo(args.steps, args.warmup, args.precision)
        print(json.dumps({"tps": tps, "fpt": fpt}))
        return
    if args.one == "torch":
        print(json.dumps({"tps": bench_torch(args.steps, args.warmup)}))
        return
    from neo.parallel.flops import cpu_machine_flops

    peak = cpu_machine_flops()
    impls = ["neo"] if args.skip_torch else ["neo", "torch", "torch_hp"]
    runs: dict[str, list[float]] = {impl: [] for impl in impls}
    fpt = 0.0
    for _ in range(args.rounds):
        for impl in impls:
            result = _measure(impl.removesuffix("_hp"), args.steps, args.warmup, huge_pages=impl != "torch")
            runs[impl].append(result["tps"])
            fpt = result.get("fpt", fpt)
    names = {
        "neo": "neo (jax, jit)",
        "torch": "transformers GPTNeo (torch, AdamW)",
        "torch_hp": "  the same, malloc on huge pages",
    }
    print(f"machine: {os.cpu_count()} cores, measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"model FLOPs/token (6N + attention): {fpt / 1e6:.1f} M; {args.rounds} rounds of {args.steps} steps")
    print(f"{'implementation':<36}{'median tok/s':>13}{'MFU':>8}   each round (tokens/s)")
    for impl in impls:
        med = statistics.median(runs[impl])
        each = ", ".join(f"{t:,.0f}" for t in runs[impl])
        print(f"{names[impl]:<36}{med:>13,.0f}{med * fpt / peak:>8.1%}   {each}")
    if "torch" in runs:
        neo = statistics.median(runs["neo"])
        print(
            f"neo / torch (medians): {neo / statistics.median(runs['torch']):.2f}x as each comes, "
            f"{neo / statistics.median(runs['torch_hp']):.2f}x with the same allocator setting"
        )


if __name__ == "__main__":
    main()
