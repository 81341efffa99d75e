"""`neo` that SIGKILLs itself at the worst moment for a crash: when the asynchronous save of one step has written
everything but is not yet committed (orbax's post-finalization callback runs just before the rename).

`command(step) + ["train", ...]` runs it in a child process. The hook lives here, patched into the child before the
CLI starts, so that production code carries no test hook.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any


def command(step: int) -> list[str]:
    """The argv that runs `neo` (append its arguments) killed just before the checkpoint of `step` commits."""
    return [sys.executable, str(Path(__file__).resolve()), str(step)]


def install(step: int) -> None:
    """Make this process SIGKILL itself when its asynchronous checkpoint writer is about to commit `step`.

    Every `Checkpoints.save` is taken as the writer's: a `neo train` process has one.
    """
    import orbax.checkpoint as ocp

    from neo.train.checkpoint import Checkpoints

    pending: deque[int] = deque()  # steps saved, in order, whose commit has not come yet
    make_options, save = ocp.CheckpointManagerOptions, Checkpoints.save

    def before_commit() -> None:  # orbax finalizes saves one at a time, in order
        if pending.popleft() == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def options(**kwargs: Any) -> Any:
        if kwargs.get("enable_async_checkpointing") and not kwargs.get("read_only"):
            kwargs["async_options"] = ocp.AsyncOptions(post_finalization_callback=before_commit)
        return make_options(**kwargs)

    def recording_save(self: Checkpoints, saved: int, *args: Any, **kwargs: Any) -> None:
        pending.append(saved)
        save(self, saved, *args, **kwargs)

    ocp.CheckpointManagerOptions = options
    Checkpoints.save = recording_save  # type: ignore[method-assign]


if __name__ == "__main__":
    from neo.cli.app import main  # first, as `python -m neo.cli.app` would: it sets up the environment

    install(int(sys.argv.pop(1)))
    main()
