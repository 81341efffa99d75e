"""lm-evaluation-harness throughput: neo's backend ("neo") vs lm-eval's own Hugging Face backend ("hf").

The same GPT-Neo (random weights, saved by transformers and converted with `neo convert from-hf`), the same
tokenizer (a BPE trained on the standard library's docstrings) and the same task: a hellaswag-shaped multiple choice
task written locally (a docstring's opening as the context, four endings: its true continuation and three others),
so every request is a loglikelihood request. Each backend runs in a process of its own (PyTorch's OpenMP threads
slow JAX down in a shared process), rounds alternate neo, hf, neo, hf, ...; in each process the model is loaded, the
task evaluated once through lm-eval's `simple_evaluate` (cold: neo compiles here; accuracies printed, they must agree),
then the task's requests are given to the backend's `loglikelihood` again (warm, timed: tokenizing, batching,
scoring). requests/s = requests over that warm call's wall time; lm-eval's own overhead around it (building
requests, metrics, and `simple_evaluate`'s environment report, which runs torch's collect_env: seconds) is the same
for both backends and left out. Prints every round, the medians, the cold evaluation times and the machine.

    python benchmarks/eval_harness.py [--docs 100] [--rounds 3] [--batch-size 16] [--n-embd 512] [--n-layer 6]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASK = """
task: bench_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def prepare(work: Path, args: argparse.Namespace) -> None:
    """Tokenizer, HF model, converted neo run and the task, in `work`."""
    import numpy as np
    import torch
    import transformers

    from neo.data.stdlib_corpus import iter_documents, write_corpus
    from neo.data.tokenizer import train_tokenizer

    train_dir, _, _ = write_corpus(work / "corpus", max_chars=3_000_000)
    tok = train_tokenizer([train_dir], work / "tok", args.vocab, min_frequency=2)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=tok.path, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = transformers.GPTNeoConfig(
        vocab_size=len(fast),
        max_position_embeddings=args.n_ctx,
        hidden_size=args.n_embd,
        num_heads=args.n_embd // 64,
        num_layers=args.n_layer,
        attention_types=[[["global", "local"], args.n_layer // 2]],
        window_size=256,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    transformers.GPTNeoForCausalLM(config).save_pretrained(work / "hf", safe_serialization=True)
    fast.save_pretrained(work / "hf")
    subprocess.run([sys.executable, "-m", "neo.cli.app", "convert", "from-hf", work / "hf", work / "run"], check=True)

    rng = np.random.default_rng(0)
    docs = [d for d in iter_documents() if len(d) > 700][: args.docs * 2]
    rows = []
    for i in range(args.docs):
        doc = docs[i]
        cut = int(rng.integers(250, 500))
        others = [docs[int(j)] for j in rng.choice(len(docs), 3, replace=False) if int(j) != i][:3]
        endings = [doc[cut : cut + 120], *[o[cut : cut + int(rng.integers(60, 160))] for o in others]]
        rows.append({"context": doc[:cut], "endings": endings, "label": 0})
    (work / "tasks").mkdir()
    (work / "tasks" / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "tasks" / "bench_mc.yaml").write_text(TASK.format(dir=work / "tasks"))


def child(work: Path, backend: str, batch_size: int) -> dict[str, Any]:
    """Load one backend, evaluate the task cold then warm; return the timings and accuracy."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    if backend == "neo":
        from neo.eval.harness import NeoLM

        lm: Any = NeoLM(run=str(work / "run"), batch_size=batch_size)
    else:
        import torch
        from lm_eval.models.huggingface import HFLM

        torch.set_num_threads(os.cpu_count() or 1)
        lm = HFLM(pretrained=str(work / "hf"), batch_size=batch_size, device="cpu", dtype="float32")
    load_s = time.perf_counter() - start
    manager = TaskManager(include_path=str(work / "tasks"), include_defaults=False)
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=["bench_mc"], task_manager=manager, bootstrap_iters=0, log_samples=False)
    cold_s = time.perf_counter() - start
    assert results is not None
    task = manager.load(["bench_mc"])["tasks"]["bench_mc"]
    task.build_all_requests(rank=0, world_size=1)
    requests = [inst for inst in task.instances if inst.request_type == "loglikelihood"]
    start = time.perf_counter()
    lm.loglikelihood(requests, disable_tqdm=True)  # the backend alone, warm: what requests/s measures
    warm_s = time.perf_counter() - start
    return {
        "backend": backend,
        "load_s": load_s,
        "cold_s": cold_s,
        "warm_s": warm_s,
        "requests": len(requests),
        "acc": results["results"]["bench_mc"]["acc,none"],
        "acc_norm": results["results"]["bench_mc"]["acc_norm,none"],
    }


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100, help="multiple-choice documents (4 requests each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--workdir", type=Path, help="reuse a prepared folder (default: a new temporary one)")
    parser.add_argument("--only", choices=["neo", "hf"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    if args.only is not None:
        print(json.dumps(child(args.workdir, args.only, args.batch_size)))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="neo-bench-harness-"))
    if not (work / "run").exists():
        prepare(work, args)
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, load {os.getloadavg()[0]:.2f}")
    print(
        f"model: n_embd {args.n_embd}, n_layer {args.n_layer}, n_ctx {args.n_ctx}; "
        f"{args.docs} docs; batch {args.batch_size}"
    )
    rows: dict[str, list[dict[str, Any]]] = {"neo": [], "hf": []}
    for r in range(args.rounds):
        for backend in ("neo", "hf"):
            cmd = [
                sys.executable,
                __file__,
                "--only",
                backend,
                "--workdir",
                str(work),
                "--batch-size",
                str(args.batch_size),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows[backend].append(row)
            print(
                f"round {r + 1} {backend:>3}: {row['requests'] / row['warm_s']:7.1f} requests/s (warm backend) "
                f"({row['requests']} in {row['warm_s']:.2f} s), cold simple_evaluate {row['cold_s']:.2f} s, "
                f"load {row['load_s']:.2f} s, "
                f"acc {row['acc']:.4f}, acc_norm {row['acc_norm']:.4f}",
                flush=True,
            )
    med = {b: statistics.median(x["requests"] / x["warm_s"] for x in rs) for b, rs in rows.items()}
    cold = {b: statistics.median(x["cold_s"] for x in rs) for b, rs in rows.items()}
    print(f"median warm requests/s: neo {med['neo']:.1f}, hf {med['hf']:.1f} -> neo/hf {med['neo'] / med['hf']:.2f}x")
    print(f"median cold evaluation: neo {cold['neo']:.2f} s, hf {cold['hf']:.2f} s")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
