"""`neo serve`: an OpenAI-compatible completion server with continuous batching (see neo.serve)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

import typer

from neo.cli.common import err
from neo.errors import ConfigError


def serve_command(
    source: str = typer.Argument(
        ..., help="A run directory (neo train / neo convert) or a HF GPT-Neo dir; or gs://..."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key: str = typer.Option(
        None, "--api-key", envvar="NEO_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health."
    ),
    slots: int = typer.Option(8, "--slots", min=1, help="Requests decoded together (rows of the batched KV cache)."),
    queue_size: int = typer.Option(64, "--queue-size", min=0, help="Requests waiting for a slot before 429s."),
    context: int = typer.Option(
        None,
        "--context",
        min=1,
        help="Tokens per request, prompt + completion (default: the model's n_ctx); the KV cache holds this many per "
        "slot and every step reads all of them, so a shorter context decodes faster.",
    ),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Cap on a request's max_tokens (default n_ctx)."),
    model_name: str = typer.Option(None, "--model-name", help="The model id clients pass (default: the dir's name)."),
    drain_timeout: float = typer.Option(60.0, "--drain-timeout", help="On SIGTERM, seconds to finish in-flight work."),
    mesh: str = typer.Option(
        None, "--mesh", help="Run sharded: 'run' = the run's own mesh, or a shape such as x:2,y:4 (as neo sample)."
    ),
    layout: str = typer.Option(None, "--layout", help="With --mesh SHAPE: the layout, e.g. heads:y,mlp:y."),
) -> None:
    """Serve a model over HTTP: POST /v1/completions (OpenAI's API), GET /v1/models, /health, /metrics and a
    playground page at /.

    Example: neo serve runs/tiny --port 8000

    Example: curl localhost:8000/v1/completions -H 'Content-Type: application/json'
    -d '{"model": "tiny", "prompt": "Hello", "max_tokens": 16, "temperature": 0}'
    """
    try:
        import uvicorn

        from neo.serve.app import create_app
        from neo.serve.engine import Engine
    except ImportError as exc:
        raise ConfigError(
            f"neo serve needs the serve extra ({exc.name} is missing): pip install 'neo[serve]'"
        ) from None
    from neo import storage
    from neo.infer.sampling import load_for_sampling, mesh_for_sampling

    _check_port(host, port)
    loaded = load_for_sampling(source, *mesh_for_sampling(source, mesh, layout), decoding=True)
    name = model_name or storage.basename(source.rstrip("/")) or "neo"
    engine = Engine(loaded, slots=slots, queue_size=queue_size, context=context)
    engine.start()
    err.print(f"compiling {name} for {engine.slots} slots ...")
    engine.warm_up()
    app = create_app(engine, model_name=name, api_key=api_key, max_tokens=max_tokens)

    err.print(f"serving {name} at http://{host}:{port} (playground at /, OpenAI API at /v1); SIGTERM drains")
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=drain_timeout, access_log=False
    )
    _draining_server_class()(config).run()  # returns once SIGTERM (or Ctrl-C) has let every open request finish
    engine.stop(drain=True)
    if engine.error is not None:
        raise engine.error


def _draining_server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server, but a SIGTERM/SIGINT after the graceful shutdown ends `run()` instead of being raised
        again (which kills the process): the engine then stops and `neo serve` exits 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer


def _check_port(host: str, port: int) -> None:
    """A port that is taken is one line before the model loads, not a traceback after."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or --host") from None


def register(app: typer.Typer) -> None:
    app.command("serve", short_help="Serve a model: OpenAI-compatible completions, continuous batching.")(serve_command)
