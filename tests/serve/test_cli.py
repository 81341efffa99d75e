"""`neo serve` from the command line: user errors in one line, and a shutdown that lets in-flight requests finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from neo.cli.app import run
from neo.serve.engine import Generation
from tests.serve.conftest import Server, free_port


def stream_lines(url: str, body: dict[str, Any], key: str | None = None) -> list[str]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=120) as res:
        return [line.decode().strip() for line in res if line.strip()]


def test_neo_serve_refuses_in_one_line(tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run(["serve", str(tmp_path / "missing"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "missing" in err and "\n" not in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert run(["serve", str(run_dir), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot listen on 127.0.0.1" in err and "\n" not in err


def test_shutdown_drains_a_stream_in_flight(server: Server, loaded: Any) -> None:
    """uvicorn's SIGTERM handler sets `should_exit`; set it while a stream is mid-way (the engine held on a gate)."""
    import uvicorn

    from neo.serve.app import create_app

    gate, blocked = threading.Event(), threading.Event()

    def hold(kind: str, payload: Any) -> None:  # runs on the engine's thread: the engine waits here
        blocked.set()
        gate.wait(60)

    holder = Generation([1, 2, 3], max_tokens=2, temperature=0.0, on_event=hold)
    server.engine.submit(holder)
    assert blocked.wait(30)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(server.engine, model_name="tiny"), port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        assert thread.is_alive()
        time.sleep(0.02)
    lines: list[str] = []
    body = {"model": "tiny", "prompt": "abc", "max_tokens": 16, "temperature": 0, "stream": True}
    client = threading.Thread(target=lambda: lines.extend(stream_lines(f"http://127.0.0.1:{port}", body)))
    client.start()
    while server.engine.queue_depth() == 0:  # the request is queued behind the held engine
        time.sleep(0.02)
    uv.should_exit = True  # what SIGTERM does
    while True:  # the server stops accepting connections before anything else
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.02)
        except OSError:
            break
    gate.set()
    client.join(60)
    thread.join(60)
    assert not thread.is_alive() and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    from neo.infer.sampling import sample_texts

    assert (
        "".join(c["choices"][0]["text"] for c in chunks)
        == sample_texts(loaded, ["abc"], max_new_tokens=16, temperature=0)[0]
    )
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


@pytest.mark.slow  # a fresh process: imports, load and compiles (~30 s on 2 busy cores)
def test_neo_serve_process_exits_cleanly_on_sigterm(run_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "NEO_API_KEY": "k"}
    neo = str(Path(sys.executable).parent / "neo")  # the console script, installed beside this interpreter
    cmd = [neo, "serve", str(run_dir), "--port", str(port), "--slots", "2"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "neo serve did not start"
                time.sleep(0.2)
        out: list[str] = []
        body = {"model": run_dir.name, "prompt": "abc", "max_tokens": 40, "temperature": 0, "stream": True}
        client = threading.Thread(target=lambda: out.extend(stream_lines(f"http://127.0.0.1:{port}", body, "k")))
        client.start()
        proc.send_signal(signal.SIGTERM)
        client.join(120)
        assert proc.wait(120) == 0
        assert out and out[-1] == "data: [DONE]"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
