"""Training throughput on this machine: neo's jitted train step vs Hugging Face GPTNeoForCausalLM (PyTorch, AdamW).

Same model (6 layers, 384 wide, 6 heads, n_ctx 256, 8192 vocab, all-global attention), same batch (8), same
thread count, random tokens. Prints tokens/s and MFU against the measured fp32 matmul peak of this machine.

    python benchmarks/train.py [--steps 20] [--warmup 3] [--skip-torch]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

N_LAYER, N_EMBD, N_HEAD, N_CTX, N_VOCAB, BATCH = 6, 384, 6, 256, 8192, 8


def bench_config() -> Any:
    """neo's config of the benchmark model (also used by train_dots.py)."""
    from neo.config import compose

    return compose(
        [
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
    )


def bench_neo(steps: int, warmup: int) -> tuple[float, float]:
    import jax

    from neo.train.metrics import flops_per_token
    from neo.train.session import build_session

    cfg = bench_config()
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


def bench_torch(steps: int, warmup: int) -> float:
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
    model = GPTNeoForCausalLM(config).train()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()
    from neo.parallel.flops import cpu_machine_flops

    peak = cpu_machine_flops()
    neo_tps, fpt = bench_neo(args.steps, args.warmup)
    print(f"machine: {os.cpu_count()} cores, measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"model FLOPs/token (6N + attention): {fpt / 1e6:.1f} M")
    print(f"{'implementation':<34}{'tokens/s':>10}{'MFU':>8}")
    print(f"{'neo (jax, jit)':<34}{neo_tps:>10,.0f}{neo_tps * fpt / peak:>8.1%}")
    if not args.skip_torch:
        torch_tps = bench_torch(args.steps, args.warmup)
        print(f"{'transformers GPTNeo (torch, AdamW)':<34}{torch_tps:>10,.0f}{torch_tps * fpt / peak:>8.1%}")
        print(f"neo / torch: {neo_tps / torch_tps:.2f}x")


if __name__ == "__main__":
    main()
