"""The hand-over from paho's thread to the ingest thread: order, bound, and no lost wake-up."""

from __future__ import annotations

import threading
import time

from controller.transport.link import Inbound, Inbox


def msg(i: int) -> Inbound:
    return Inbound(f"t/{i}", str(i).encode())


def test_batches_come_in_arrival_order_and_a_full_inbox_refuses() -> None:
    box = Inbox(maxsize=5)
    assert [box.put(msg(i)) for i in range(7)] == [True] * 5 + [False] * 2
    assert box.qsize() == 5
    assert [m.topic for m in box.take(3, timeout=0)] == ["t/0", "t/1", "t/2"]
    assert box.put(msg(7))
    assert [m.topic for m in box.take(100, timeout=0)] == ["t/3", "t/4", "t/7"]
    assert box.qsize() == 0 and box.take(10, timeout=0) == []


def test_a_waiting_taker_wakes_for_a_put_from_another_thread() -> None:
    """Each round, the taker is asleep (or about to be) when the put comes. A wake-up lost
    between its emptiness check and its wait would leave it asleep for the whole 5 s."""
    box = Inbox(maxsize=10)
    for i in range(200):
        t = threading.Timer(0.001 * (i % 3), box.put, args=(msg(i),))
        t.start()
        t0 = time.monotonic()
        got = box.take(10, timeout=5)
        t.join()
        assert [m.topic for m in got] == [f"t/{i}"]
        assert time.monotonic() - t0 < 4, f"round {i}: the taker slept through the put"
