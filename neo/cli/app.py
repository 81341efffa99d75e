"""The `neo` command: one Typer app with a sub-app per command group.

Commands are glue: parse, compose the config, call one core function, render the result. A `NeoError` becomes one
red line on stderr and exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from neo.errors import NeoError, storage_full
from neo.runtime import persistent_compilation_cache, prepare_aot

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow is only our TFRecord reader: keep it quiet
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _quiet_libraries() -> None:
    """Orbax and JAX log routine INFO/WARNING lines through absl; the CLI shows its own progress instead."""
    import logging

    logging.getLogger("absl").setLevel(logging.CRITICAL)  # orbax also logs, at ERROR, what it then raises
    logging.getLogger("jax").setLevel(logging.ERROR)
    # an orbax restore runs one asyncio task per array: when a damaged checkpoint fails one (neo reports it in one
    # line), the others' errors would be logged as "Task exception was never retrieved" tracebacks
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # a cache entry cut short (a full disk while it was written) is only recompiled: not the user's concern
    warnings.filterwarnings("ignore", message="Error reading persistent compilation cache entry")
    previous = sys.unraisablehook

    def drop_late_callbacks(unraisable: Any) -> None:
        # ...and the reads still in flight then call back into orbax's closed event loop
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    sys.unraisablehook = drop_late_callbacks


_quiet_libraries()


persistent_compilation_cache()
prepare_aot()

err_console = Console(stderr=True)
app = typer.Typer(
    name="neo",
    help="Train GPT-Neo-style language models on JAX, from one CPU to a TPU pod.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    """Attach every command group; each lives in its own module under neo/cli/."""
    import importlib

    for module_name in (
        "quickstart",
        "tokenizer",
        "data",
        "config",
        "layout",
        "train",
        "eval",
        "sample",
        "convert",
        "serve",
    ):
        importlib.import_module(f"neo.cli.{module_name}").register(app)


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return its exit code (tests call this; `main` is the console script)."""
    from typer._click.exceptions import ClickException  # typer vendors click; this is its usage-error base

    try:
        code = app(args=argv, standalone_mode=False)  # a command's typer.Exit(code) comes back as its return value
    except NeoError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[red]aborted[/]")
        return 130
    except ClickException as exc:  # usage errors: click's own message, exit 2
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        return 130
    except Exception as exc:  # a full disk is no bug: one line, whatever library hit it
        full = storage_full(exc)
        if full is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(full))}", highlight=False, soft_wrap=True)
        return full.exit_code
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
