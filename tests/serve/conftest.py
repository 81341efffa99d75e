"""One tiny run directory, its model loaded once, and one live server on a free localhost port for the session."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

API_KEY = "test-key"
SLOTS = 4
QUEUE = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory (params-only checkpoint) of a small global/local model, with a character-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from neo.convert import write_run
    from tests.model.conftest import params_for, small

    # two layers (global, then a local window of 3) keep the compiles short; 64 ids, of which the tokenizer has 53
    cfg = small(n_vocab=64, n_ctx=64, n_layer=2, attention_types=[[["global", "local"], 1]])
    path = write_run(tmp_path_factory.mktemp("serve") / "tiny", cfg, params_for(cfg), Path("."), None)
    letters = [chr(ord("a") + i) for i in range(26)] + [chr(ord("A") + i) for i in range(25)] + [" "]
    vocab = {c: i for i, c in enumerate(letters)} | {"<|endoftext|>": 52}  # every id below 53 is one character
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.save(str(Path(path) / "tokenizer.json"))
    return Path(path)


@pytest.fixture(scope="session")
def loaded(run_dir: Path) -> Any:
    from neo.infer.sampling import load_for_sampling

    return load_for_sampling(run_dir)


@dataclass
class Server:
    url: str
    key: str
    model: str
    engine: Any


@pytest.fixture(scope="session")
def server(loaded: Any) -> Iterator[Server]:
    """`neo serve`'s app and engine (SLOTS slots, a queue of QUEUE, an API key) under uvicorn in a thread."""
    import uvicorn

    from neo.serve.app import create_app
    from neo.serve.engine import Engine

    engine = Engine(loaded, slots=SLOTS, queue_size=QUEUE)
    engine.start()
    engine.warm_up()
    app = create_app(engine, model_name="tiny", api_key=API_KEY, max_tokens=48)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield Server(f"http://127.0.0.1:{port}", API_KEY, "tiny", engine)
    uv.should_exit = True
    thread.join(10)
    engine.stop(drain=False, timeout=10)
