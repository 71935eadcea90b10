"""A simulated cluster's outbox: what it sends goes out in order, each message once, whether
queued in a burst or one at a time, and what was queued while the link was down goes out
after it comes back."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from firmware_sim.cluster import SimConfig
from paho.mqtt.enums import CallbackAPIVersion

from devices import topics
from devices.areas import generate
from tests.integration.harness import SimThread
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration


def test_sent_messages_arrive_in_order_before_and_after_a_lost_link(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    net = generate(1, 1)
    cid = next(iter(net.clusters))
    sim = SimThread(net, SimConfig(port=broker.port, heartbeat_s=3600,
                                   reconnect_min_s=0.1, reconnect_max_s=0.5)).start()
    got: list[bytes] = []
    subscribed = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outbox-watch")
    watcher.on_message = lambda _c, _u, m: got.append(m.payload)
    watcher.on_subscribe = lambda *_: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe(topics.cluster_event(cid) + "/test", qos=1)
    watcher.loop_start()
    try:
        assert subscribed.wait(5)
        board = sim.by_id(cid)
        wait_for(board.connected.is_set, 10, "the cluster online")
        topic = topics.cluster_event(cid) + "/test"

        def burst(tag: str, n: int) -> None:
            # one call on the simulator's loop: all queued before the outbox task runs
            for i in range(n):
                board._send(topic, f"{tag}-{i}".encode())

        sim.call(lambda: burst("a", 30))
        for i in range(10):  # one at a time, each alone in the outbox
            wait_for(lambda: not board._outbox, 5, "the outbox drained")
            sim.call(lambda i=i: board._send(topic, f"b-{i}".encode()))
        wait_for(lambda: len(got) == 40, 10, "every message at the watcher")
        # the link goes (a power cut: the broker hands out its Will at once), and what is
        # queued meanwhile goes out once the cluster is back
        sim.call(lambda: board.inject("power_cut", {"battery": False}))
        wait_for(lambda: not board.connected.is_set(), 10, "the cluster to notice")
        sim.call(lambda: burst("c", 5))
        sim.call(lambda: board.clear("power_cut"))
        wait_for(lambda: len(got) >= 45, 20, "the queued messages after the reconnect")
        wait_for(lambda: not board._outbox, 5, "the outbox drained")
        assert got == ([f"a-{i}".encode() for i in range(30)]
                       + [f"b-{i}".encode() for i in range(10)]
                       + [f"c-{i}".encode() for i in range(5)])
    finally:
        watcher.loop_stop()
        sim.stop()
        broker.kill()
