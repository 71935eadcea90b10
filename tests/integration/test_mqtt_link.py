"""The controller's MQTT link reads the socket in 64 KiB blocks (BufferedClient) and cuts
QoS 0 messages out of them itself (the fast lane): every packet must still arrive whole and
in order, whatever its size and wherever the blocks cut it, and nothing from a dead
connection may leak into the next one."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.transport.mqtt import Inbound, MqttLink
from devices import topics
from tests.integration.harness import Broker, wait_for

pytestmark = pytest.mark.integration


def drain(link: MqttLink, n: int, timeout: float = 30) -> list[Inbound]:
    got: list[Inbound] = []

    def enough() -> bool:
        got.extend(link.inbox.take(n, timeout=0))
        return len(got) >= n

    wait_for(enough, timeout, f"{n} messages through the link (got {len(got)})", every=0.02)
    return got


def publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="link-test-pub")
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@pytest.mark.parametrize("qos", [0, 1])  # QoS 0: mostly the fast lane; QoS 1: paho's parser
def test_small_and_large_packets_arrive_whole_and_in_order(tmp_path: Path, qos: int) -> None:
    broker = Broker(tmp_path).start()
    link = MqttLink("127.0.0.1", broker.port)
    link.start()
    pub = publisher(broker.port)
    try:
        # heartbeat-sized packets, interleaved with packets larger than one 64 KiB read
        # (a 2-byte and a 3-byte remaining length) and empty ones
        sizes = [300 + (i * 37) % 400 for i in range(4000)]
        for i in range(0, 4000, 500):
            sizes[i] = 70_000 + i
            sizes[i + 1] = 0
        topic = topics.cluster_event("hd-c01")
        sent = []
        for i, size in enumerate(sizes):
            payload = (f"{i:06d}".encode() * (size // 6 + 1))[:size]
            sent.append(hashlib.sha256(payload).hexdigest())
            pub.publish(topic, payload, qos=qos)
        got = drain(link, len(sizes))
        assert [hashlib.sha256(m.payload).hexdigest() for m in got] == sent
        assert {m.topic for m in got} == {topic}
    finally:
        pub.loop_stop()
        pub.disconnect()
        link.stop()
        broker.kill()


def test_a_burst_already_read_is_handed_on_at_once(tmp_path: Path) -> None:
    """Packets that came in one read sit in the buffer, where select cannot see them: they
    must be parsed straight away, not one per select timeout (1 s each)."""
    broker = Broker(tmp_path).start()
    link = MqttLink("127.0.0.1", broker.port)
    link.start()
    pub = publisher(broker.port)
    try:
        for i in range(20):
            pub.publish(topics.cluster_telemetry("hd-c03"), f"burst-{i}".encode(), qos=0)
        got = drain(link, 20, timeout=5)  # a stalled buffer would take ~19 s
        assert [m.payload for m in got] == [f"burst-{i}".encode() for i in range(20)]
    finally:
        pub.loop_stop()
        pub.disconnect()
        link.stop()
        broker.kill()


def test_a_new_connection_starts_clean_after_the_broker_restarts(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    link = MqttLink("127.0.0.1", broker.port)
    link.start()
    try:
        pub = publisher(broker.port)
        for i in range(200):
            pub.publish(topics.cluster_telemetry("hd-c02"), f"before-{i}".encode(), qos=0)
        assert len(drain(link, 200)) == 200
        pub.loop_stop()
        broker.kill()
        wait_for(lambda: not link.connected.is_set(), 10, "the link to notice")
        broker = Broker(tmp_path, port=broker.port).start()
        wait_for(link.connected.is_set, 20, "the link to reconnect")
        pub = publisher(broker.port)
        for i in range(200):
            pub.publish(topics.cluster_telemetry("hd-c02"), f"after-{i}".encode(), qos=1)
        got = drain(link, 200)
        assert [m.payload for m in got] == [f"after-{i}".encode() for i in range(200)]
        pub.loop_stop()
        pub.disconnect()
    finally:
        link.stop()
        broker.kill()


def test_wait_written_returns_once_a_publish_is_on_the_wire_and_never_hangs(
        tmp_path: Path) -> None:
    """An emergency waits (briefly) for its command to leave before it writes its rows:
    the wait must end when the bytes are out, and must not hang on a dead link."""
    broker = Broker(tmp_path).start()
    link = MqttLink("127.0.0.1", broker.port)
    link.start()
    seen: list[bytes] = []
    subscribed = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="link-test-watch")
    watcher.on_message = lambda _c, _u, m: seen.append(m.payload)
    watcher.on_subscribe = lambda *_: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe("loa/v1/area/hd/cmd", qos=1)
    watcher.loop_start()
    try:
        assert subscribed.wait(5)
        wait_for(link.connected.is_set, 10, "the link")
        for i in range(50):
            assert link.publish("loa/v1/area/hd/cmd", b"x" * 20_000 + str(i).encode(), 1)
        assert link.wait_written(5)
        assert not link._client._out_packet  # everything handed to the kernel
        wait_for(lambda: len(seen) == 50, 5, "every command at the subscriber")
        broker.kill()
        wait_for(lambda: not link.connected.is_set(), 10, "the link to notice")
        link.publish("loa/v1/area/hd/cmd", b"lost", 1)
        t0 = time.monotonic()
        link.wait_written(0.2)
        assert time.monotonic() - t0 < 1.0
    finally:
        watcher.loop_stop()
        link.stop()
        broker.kill()
