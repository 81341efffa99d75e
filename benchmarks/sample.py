"""Generation throughput: neo's KV-cache decoder vs Hugging Face `generate`, same weights, same thread count.

A neo_125M-shaped model with random weights (converted to transformers with `neo.model.hf.to_hf`), a 128-token
prompt, 256 new tokens, greedy, at batch 1 and batch 8. After one warm-up (compiling) run of each, neo and
transformers are timed alternately, `--rounds` times each, so that load from other processes on a shared machine
hits both alike; prints the median tokens/s (new tokens over a whole call, prefill included), the median time to
first token (a call with one new token), the first run's time, and the ratio.

    python benchmarks/sample.py [--new 256] [--prompt 128] [--batches 1 8] [--rounds 3] [--skip-torch]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    import flax.linen as nn

    from neo.config import compose
    from neo.model.decode import generate, unrolled
    from neo.model.params import init_params

    cfg = compose(["model=neo_125M"]).model
    params = nn.meta.unbox(init_params(cfg, seed=0))
    decode_cfg, decode_params = unrolled(cfg, params)  # once, as loading does: generate would per call (0.3 s)
    rng = np.random.default_rng(0)
    runners: dict[str, Callable[[np.ndarray, int], None]] = {
        "neo (jax, KV cache)": lambda ids, new: generate(
            decode_cfg, decode_params, ids.tolist(), max_new_tokens=new, temperature=0.0
        ),
    }
    if not args.skip_torch:
        import torch
        from transformers import GPTNeoConfig, GPTNeoForCausalLM

        from neo.model.hf import to_hf

        torch.set_num_threads(os.cpu_count() or 1)
        hf_config, state = to_hf(cfg, params)
        model = GPTNeoForCausalLM(GPTNeoConfig(**hf_config)).eval()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)

        def hf_generate(ids: np.ndarray, new: int) -> None:
            x = torch.from_numpy(ids)
            with torch.no_grad():
                model.generate(
                    x, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                    attention_mask=torch.ones_like(x),
                )  # fmt: skip

        runners["transformers generate"] = hf_generate

    print(f"{os.cpu_count()} cores; neo_125M shape, prompt {args.prompt}, {args.new} new tokens, greedy", flush=True)
    print(f"{'implementation':<28}{'batch':>6}{'tokens/s':>10}{'first token s':>15}{'first run s':>13}", flush=True)
    for batch in args.batches:
        ids = rng.integers(0, cfg.n_vocab, (batch, args.prompt)).astype(np.int64)
        first = {name: timed(lambda r=run, i=ids: r(i, args.new)) for name, run in runners.items()}
        for run in runners.values():
            run(ids, 1)  # compiles neo's one-new-token cache bucket
        tps: dict[str, list[float]] = {name: [] for name in runners}
        ttft: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):  # alternate, so that a busy moment slows both
            for name, run in runners.items():
                ttft[name].append(timed(lambda r=run, i=ids: r(i, 1)))
                tps[name].append(batch * args.new / timed(lambda r=run, i=ids: r(i, args.new)))
        for name in runners:
            speed, first_token = float(np.median(tps[name])), float(np.median(ttft[name]))
            print(f"{name:<28}{batch:>6}{speed:>10.1f}{first_token:>15.3f}{first[name]:>13.1f}", flush=True)
        if len(runners) == 2:
            neo, hf = (float(np.median(v)) for v in tps.values())
            rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(*tps.values(), strict=True))
            print(f"batch {batch}: neo / transformers = {neo / hf:.2f}x (per round: {rounds})", flush=True)


if __name__ == "__main__":
    main()
