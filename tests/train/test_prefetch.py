"""Batches prepared ahead on a thread: same items in order, errors surface in the loop, early exit stops the thread."""

from __future__ import annotations

import itertools
import threading

import pytest

from neo.train.prefetch import Prefetch


def test_items_arrive_converted_and_in_order() -> None:
    with Prefetch(iter(range(50)), lambda x: x * 2, depth=3) as items:
        assert list(items) == [2 * i for i in range(50)]


def test_a_source_error_is_raised_by_next_in_the_consumer() -> None:
    def source():
        yield 1
        raise ValueError("shard 3 is corrupt")

    with Prefetch(source(), lambda x: x) as items:
        assert next(items) == 1
        with pytest.raises(ValueError, match="shard 3 is corrupt"):
            next(items)


def test_leaving_early_stops_the_thread_of_an_endless_source() -> None:
    with Prefetch(itertools.count(), lambda x: x, depth=2) as items:
        assert next(items) == 0
        thread = items._thread
    assert not thread.is_alive()
    assert not any(t.name == "neo-prefetch" and t.is_alive() for t in threading.enumerate())
