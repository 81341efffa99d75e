"""`neo serve` under 1, 4, 8 and 16 concurrent clients against the same requests run one after another as
`neo sample` processes.

A neo_125M-shaped model with random weights (the one `benchmarks/sample_e2e.py` makes: a HF GPT-Neo directory with
an 8000-token BPE tokenizer, converted with `neo convert from-hf`). Every request is greedy, `NEW` new tokens, one of
four prompts (14 to 54 tokens). Per round, alternating: a fresh `neo serve RUN --slots 16 --context 256` process
(started and warmed up untimed) takes each concurrency level in turn, C clients each sending `--per-client` requests
back to back; then the sequential baseline, `--sequential` requests each a fresh `neo sample RUN --prompt P
--max-new-tokens NEW --temperature 0 --no-stop-at-eos` process, wall time from launch to exit (neo's compilation
cache warm). Reported: total tokens/s (completion tokens over wall time) and p50/p95 request latency, every round and
the medians. Greedy texts from the server are checked against `neo sample`'s.

    python benchmarks/serve.py [--rounds 3] [--new 64] [--per-client 2] [--sequential 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sample_e2e import PROMPT, make_model

PROMPTS = [PROMPT, PROMPT[:120], "In a shocking finding, scientists discovered a herd of unicorns", PROMPT[60:200]]
LEVELS = (1, 4, 8, 16)


def post(url: str, prompt: str, new: int) -> tuple[float, int, str]:
    body = {"model": "bench", "prompt": prompt, "max_tokens": new, "temperature": 0}
    req = urllib.request.Request(
        url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as res:
        out = json.loads(res.read())
    return time.perf_counter() - start, out["usage"]["completion_tokens"], out["choices"][0]["text"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_server(neo: str, run_dir: Path, port: int, new: int) -> subprocess.Popen:
    cmd = [
        neo,
        "serve",
        str(run_dir),
        "--port",
        str(port),
        "--slots",
        "16",
        "--context",
        "256",
        "--model-name",
        "bench",
        "--queue-size",
        "64",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("neo serve exited") from None
            time.sleep(0.5)
    for p in PROMPTS:  # compile every prompt bucket, untimed
        post(url, p, 2)
    return proc


def load(url: str, clients: int, per_client: int, new: int) -> tuple[float, list[float], int, dict[str, str]]:
    """(wall s, latencies, completion tokens, texts by prompt) for `clients` threads each sending requests."""
    latencies: list[float] = []
    texts: dict[str, str] = {}
    tokens = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(per_client):
            prompt = PROMPTS[(i + j) % len(PROMPTS)]
            seconds, n, text = post(url, prompt, new)
            with lock:
                latencies.append(seconds)
                tokens[0] += n
                texts[prompt] = text

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies, tokens[0], texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--sequential", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workdir", help="keep the model here between runs (default: a fresh temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="neo-serve-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _, run_dir = make_model(workdir)
    neo = str(Path(sys.executable).with_name("neo"))
    url = f"http://127.0.0.1:{args.port}"

    def sample(prompt: str) -> tuple[float, str]:
        cmd = [
            neo,
            "sample",
            str(run_dir),
            "--prompt",
            prompt,
            "--max-new-tokens",
            str(args.new),
            "--temperature",
            "0",
            "--no-stop-at-eos",
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return time.perf_counter() - start, proc.stdout[len(prompt) :]

    sample(PROMPTS[0])  # warm neo's compilation cache and the OS file cache
    rates: dict[str, list[float]] = {}
    lat50: dict[str, list[float]] = {}
    lat95: dict[str, list[float]] = {}
    reference: dict[str, str] = {}
    for r in range(args.rounds):
        proc = start_server(neo, run_dir, args.port, args.new)
        try:
            for c in LEVELS:
                wall, latencies, tokens, texts = load(url, c, args.per_client, args.new)
                name = f"serve, {c} client(s)"
                rates.setdefault(name, []).append(tokens / wall)
                lat50.setdefault(name, []).append(percentile(latencies, 0.5))
                lat95.setdefault(name, []).append(percentile(latencies, 0.95))
                print(
                    f"round {r + 1}, {name}: {len(latencies)} requests, {tokens} tokens in {wall:.2f} s = "
                    f"{tokens / wall:.1f} tokens/s, p50 {lat50[name][-1]:.2f} s, p95 {lat95[name][-1]:.2f} s",
                    flush=True,
                )
                for p, t in texts.items():
                    if reference.setdefault(p, t) != t:
                        print(f"  note: the server's text for a prompt changed between runs ({p[:30]}...)")
        finally:
            proc.terminate()
            proc.wait(120)
        seconds, same = [], 0
        for i in range(args.sequential):
            prompt = PROMPTS[i % len(PROMPTS)]
            s, text = sample(prompt)
            seconds.append(s)
            same += text == reference.get(prompt)
        name = "neo sample, one after another"
        rates.setdefault(name, []).append(args.sequential * args.new / sum(seconds))
        lat50.setdefault(name, []).append(percentile(seconds, 0.5))
        lat95.setdefault(name, []).append(percentile(seconds, 0.95))
        print(
            f"round {r + 1}, {name}: {args.sequential} processes, {args.sequential * args.new} tokens in "
            f"{sum(seconds):.2f} s = {rates[name][-1]:.1f} tokens/s, p50 {lat50[name][-1]:.2f} s, p95 "
            f"{lat95[name][-1]:.2f} s; greedy text equal to the server's: {same}/{args.sequential}",
            flush=True,
        )
    base = statistics.median(rates["neo sample, one after another"])
    print("\nmedians:")
    for name in rates:
        m = statistics.median(rates[name])
        print(
            f"{name}: {m:.1f} tokens/s ({m / base:.1f}x sequential), p50 {statistics.median(lat50[name]):.2f} s, "
            f"p95 {statistics.median(lat95[name]):.2f} s"
        )


if __name__ == "__main__":
    main()
