"""One trainer per run directory: a second `neo train` on a run that is training refuses at once.

A local run directory is locked with `fcntl.flock` on `RUN_DIR/.train.lock`, which the kernel releases when the
holder exits or is killed, so a stale lock from a SIGKILLed run never blocks the restart. The file names the holder
(pid and host) for the refusal message. Object-store run directories (gs://) have no such lock and are not locked:
a double launch there is not detected.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

from neo import storage
from neo.errors import CheckpointError

LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def run_lock(run_dir: str) -> Iterator[None]:
    """Hold the run directory's lock while the block runs; CheckpointError naming the holder if another has it."""
    if storage.is_remote(run_dir):
        yield
        return
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise CheckpointError(
                f"{run_dir} is being trained by {holder}; wait for it to finish (or stop it), or pass another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
