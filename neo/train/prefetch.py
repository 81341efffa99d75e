"""Input batches prepared ahead of the train step, on one background thread.

The step runs asynchronously on the devices; while it does, this thread reads and assembles the next batches (host
reads, decoding, `jax.make_array_from_process_local_data`), so the loop only hands ready device arrays to the step.
One thread and a small bounded queue: on a 2-core machine the input work must not compete with XLA's own threads
for more than the time it really takes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class Prefetch(Generic[T]):
    """Iterate `convert(item)` for each item of `source`, computed up to `depth` items ahead on a thread.

    An exception in the source or in `convert` is re-raised by `next()` in the consuming thread. Use as a context
    manager so the thread stops when the loop ends early.
    """

    def __init__(self, source: Iterator[Any], convert: Callable[[Any], T], depth: int = 2) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source, convert), name="neo-prefetch", daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator[Any], convert: Callable[[Any], T]) -> None:
        try:
            for item in source:
                if not self._put(convert(item)):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it where the loop can report it
            self._put(exc)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
