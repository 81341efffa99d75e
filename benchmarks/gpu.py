"""One NVIDIA GPU, one command (<= 8 min on an H100/H200): neo's kernels against Hugging Face PyTorch.

    python benchmarks/gpu.py [--steps 10] [--batch 8] [--models neo_125M neo_1.3B] [--skip-torch] [--json FILE]

For neo_125M and neo_1.3B at n_ctx 2048, bf16 compute with float32 master parameters and Adam state:
- neo's train step with `model.attention_impl=xla` and `=cudnn`: tokens/s and MFU (6N + attention FLOPs per token,
  against the GPU's dense bf16 peak), and device memory: predicted by the compiled step's memory analysis (what
  `neo train --dry-run` reports) against measured (the allocator's peak bytes in use);
- the same model as transformers' GPTNeoForCausalLM (attn_implementation="sdpa", bf16 autocast, AdamW): tokens/s;
- neo's sampling (`neo.model.decode.generate`, batch 1 and 8, 128 new tokens): tokens/s.
Prints a Markdown table for benchmarks/README.md. Without a GPU it exits 2 with one line saying so.

Each configuration runs in its own process (XLA's and PyTorch's allocators never share a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

N_CTX = 2048
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense, per GPU


def _peak(kind: str) -> float:
    return next((v for k, v in PEAK_BF16.items() if k in kind), 989e12)


def _need_gpu() -> str:
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        print("benchmarks/gpu.py needs an NVIDIA GPU with jax[cuda12]; none is visible here", file=sys.stderr)
        raise SystemExit(2)
    return gpus[0].device_kind


def _overrides(model: str, impl: str, batch: int) -> list[str]:
    return [
        f"model={model}",
        "mesh=gpu-1",
        f"model.attention_impl={impl}",
        "model.precision=bfloat16",
        "model.param_dtype=float32",
        f"model.n_ctx={N_CTX}",
        f"train.batch_size={batch}",
        "train.tokens_per_mb_per_replica=0",
        "optimizer.warmup_steps=0",
    ]


def one_neo(model: str, impl: str, batch: int, steps: int) -> dict[str, Any]:
    import jax

    from neo.config import compose
    from neo.train.dry_run import _StepInContext, abstract_batch
    from neo.train.metrics import flops_per_token
    from neo.train.session import build_session

    kind = _need_gpu()
    cfg = compose(_overrides(model, impl, batch))
    session = build_session(cfg, devices=jax.devices()[:1])
    compiled = _StepInContext(session).lower(session.layout.abstract, abstract_batch(session)).compile()
    mem = compiled.memory_analysis()
    predicted = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
    predicted -= mem.alias_size_in_bytes
    state = session.fresh_state()
    rng = np.random.default_rng(0)
    batches = [session.global_batch(rng.integers(0, cfg.model.n_vocab, (batch, N_CTX + 1))) for _ in range(2)]
    for i in range(2):
        state, metrics = session.train_step(state, batches[i])
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = session.train_step(state, batches[i % 2])
    jax.block_until_ready(metrics["loss"])
    tps = steps * batch * N_CTX / (time.perf_counter() - start)
    stats = jax.devices()[0].memory_stats() or {}
    fpt = flops_per_token(cfg.model, session.n_params)
    out = {
        "what": f"neo {impl}",
        "model": model,
        "tokens_per_s": tps,
        "mfu": tps * fpt / _peak(kind),
        "predicted_gib": predicted / 2**30,
        "measured_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
        "loss": float(metrics["loss"]),
        "device": kind,
    }
    if impl == "cudnn":
        from neo.model.decode import generate

        params = jax.device_get(state["params"])
        del state
        for rows in (1, 8):
            prompts = [list(rng.integers(0, cfg.model.n_vocab, 64)) for _ in range(rows)]
            generate(cfg.model, params, prompts, max_new_tokens=8, temperature=0)  # compile
            start = time.perf_counter()
            generate(cfg.model, params, prompts, max_new_tokens=128, temperature=0)
            out[f"sample_b{rows}_tokens_per_s"] = rows * 128 / (time.perf_counter() - start)
    return out


def one_torch(model: str, batch: int, steps: int) -> dict[str, Any]:
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from neo.config import compose

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: PyTorch sees no CUDA GPU", file=sys.stderr)
        raise SystemExit(2)
    m = compose(_overrides(model, "xla", batch)).model
    config = GPTNeoConfig(
        vocab_size=m.n_vocab,
        max_position_embeddings=N_CTX,
        hidden_size=m.n_embd,
        num_layers=m.n_layer,
        num_heads=m.n_head,
        attention_types=m.attention_types,
        window_size=m.window_size,
        bos_token_id=0,
        eos_token_id=0,
    )
    net = GPTNeoForCausalLM._from_config(config, attn_implementation="sdpa").cuda().train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(0, m.n_vocab, (batch, N_CTX), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = net(tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    tps = steps * batch * N_CTX / (time.perf_counter() - start)
    return {"what": "HF PyTorch sdpa", "model": model, "tokens_per_s": tps, "measured_gib": 0.0}


def _run(args: list[str], timeout: float) -> dict[str, Any] | None:
    try:
        done = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        print(f"{args}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(f"{args}: failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["neo_125M", "neo_1.3B"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--json", default="")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, impl = args.one
        row = (
            one_torch(model, args.batch, args.steps)
            if impl == "torch"
            else one_neo(model, impl, args.batch, args.steps)
        )
        print(json.dumps(row))
        return
    _need_gpu()
    rows = []
    for model in args.models:
        for impl in ("xla", "cudnn", *(() if args.skip_torch else ("torch",))):
            cmd = ["--one", model, impl, "--batch", str(args.batch), "--steps", str(args.steps)]
            row = _run(cmd, timeout=150)
            if row is not None:
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print("| model | implementation | train tokens/s | MFU | memory predicted / measured GiB | sampling tok/s b1, b8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else ""
        mem = f"{r['predicted_gib']:.2f} / {r['measured_gib']:.2f}" if "predicted_gib" in r else ""
        sample = ""
        if "sample_b1_tokens_per_s" in r:
            sample = f"{r['sample_b1_tokens_per_s']:.0f}, {r['sample_b8_tokens_per_s']:.0f}"
        print(f"| {r['model']} | {r['what']} | {r['tokens_per_s']:,.0f} | {mfu} | {mem} | {sample} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
