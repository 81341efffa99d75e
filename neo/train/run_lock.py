"""One trainer per run directory: a second `neo train` on a run that is training refuses at once.

A local run directory is locked with `fcntl.flock` on `RUN_DIR/.train.lock`, which the kernel releases when the
holder exits or is killed, so a stale lock from a SIGKILLed run never blocks the restart. The file names the holder
(pid and host) for the refusal message.

An object-store run directory (gs://) has no flock: the lock is a lease. `.train.lock` is created only if absent (a
write conditional on no live object), names its holder and the time, and the holder rewrites it every
`HEARTBEAT_S` seconds. A newcomer that finds it refuses while the lease is fresh; once heartbeats have been missed
(the holder was killed or preempted, so it never deleted the lock) it waits until the lease is `STALE_S` old, then
takes it over; a holder on the same host whose process is gone loses its lease at once (a restart after a kill).
The times are each host's own clock: hosts whose clocks differ by more than a few seconds shift that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

from neo import storage
from neo.errors import CheckpointError

LOCK_NAME = ".train.lock"
HEARTBEAT_S = 15.0  # an object-store lock's holder rewrites it this often
STALE_S = 60.0  # ... and a lease this old belongs to a run that is gone


@contextlib.contextmanager
def run_lock(run_dir: str, on_wait: Callable[[str], None] = lambda message: None) -> Iterator[None]:
    """Hold the run directory's lock while the block runs; CheckpointError naming the holder if another has it.

    `on_wait` hears why an object-store lock is being waited for (a lease whose holder stopped heartbeating)."""
    if storage.is_remote(run_dir):
        with _lease(run_dir, on_wait):
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
            raise _refusal(run_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_me()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _refusal(run_dir: str, holder: str, extra: str = "") -> CheckpointError:
    return CheckpointError(
        f"{run_dir} is being trained by {holder}{extra}; wait for it to finish (or stop it), or pass another --run-dir"
    )


def _dead_here(holder: str) -> bool:
    """Whether `holder` ("pid N on HOST") was a process of this host that no longer runs: its lease is stale now."""
    pid, _, host = holder.removeprefix("pid ").partition(" on ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _lease_record() -> str:
    return json.dumps({"holder": _me(), "time": time.time()})


@contextlib.contextmanager
def _lease(run_dir: str, on_wait: Callable[[str], None]) -> Iterator[None]:
    path = storage.join(run_dir, LOCK_NAME)
    while not storage.create_exclusive(path, _lease_record()):
        try:
            record = json.loads(storage.read_text(path))
            holder, age = str(record["holder"]), time.time() - float(record["time"])
        except (CheckpointError, OSError, ValueError, KeyError, TypeError):
            holder, age = "an unknown holder", STALE_S  # deleted meanwhile, or not ours: retry or take over
            if not storage.exists(path):
                continue
        if age >= STALE_S or _dead_here(holder):
            storage.remove(path)  # the holder is gone; whoever then creates it first wins
            continue
        if age <= 2 * HEARTBEAT_S:
            raise _refusal(run_dir, holder, f" (its lock at {path} was renewed {age:.0f} s ago)")
        on_wait(f"{path}: {holder} stopped renewing it {age:.0f} s ago; taking it over in {STALE_S - age:.0f} s")
        time.sleep(min(STALE_S - age, HEARTBEAT_S))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed renewal is retried; the lease has slack for two
                storage.write_atomic(path, _lease_record())

    thread = threading.Thread(target=renew, name="neo-run-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            storage.remove(path)
