"""The controller's MQTT links (our own MQTT 5 link, and paho for 3.1.1-only brokers) read
the socket in large blocks: every packet must arrive whole and in order, whatever its size
and wherever the blocks cut it; nothing from a dead connection may leak into the next one;
what was published and not acknowledged is sent again after a reconnect."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.transport.link import Inbound, Link, Outbound
from controller.transport.mqtt import Mqtt5Link, make_link, probe_mqtt5
from controller.transport.mqtt311 import Mqtt311Link
from devices import topics
from tests.utils.broker import Broker, Watcher, wait_for

pytestmark = pytest.mark.integration

LINKS = {"5": Mqtt5Link, "3.1.1": Mqtt311Link}


def new_link(protocol: str, port: int, **kw: object) -> Link:
    link: Link = LINKS[protocol]("127.0.0.1", port, **kw)  # type: ignore[arg-type]
    link.subscribe([(topics.CLUSTER_EVENT_ALL, 1), (topics.CLUSTER_TELEMETRY_ALL, 0)])
    return link


def drain(link: Link, n: int, timeout: float = 30) -> list[Inbound]:
    got: list[Inbound] = []

    def enough() -> bool:
        taken = link.inbox.take(n, timeout=0)
        link.ack(taken)  # as the ingest thread does once their effects are committed
        got.extend(taken)
        return len(got) >= n

    wait_for(enough, timeout, f"{n} messages through the link (got {len(got)})", every=0.02)
    return got


def publisher(port: int, name: str = "link-test-pub") -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


@pytest.mark.parametrize("protocol", sorted(LINKS))
@pytest.mark.parametrize("qos", [0, 1])
def test_small_and_large_packets_arrive_whole_and_in_order(tmp_path: Path, qos: int,
                                                           protocol: str) -> None:
    broker = Broker(tmp_path).start()
    link = new_link(protocol, broker.port)
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
        pub.disconnect()
        pub.loop_stop()
        link.stop()
        broker.kill()


def test_a_burst_already_read_is_handed_on_at_once(tmp_path: Path) -> None:
    """Packets that came in one read are all decoded at once, not one per select timeout."""
    broker = Broker(tmp_path).start()
    link = new_link("5", broker.port)
    link.start()
    pub = publisher(broker.port)
    try:
        for i in range(20):
            pub.publish(topics.cluster_telemetry("hd-c03"), f"burst-{i}".encode(), qos=0)
        got = drain(link, 20, timeout=5)  # a stalled buffer would take ~19 s
        assert [m.payload for m in got] == [f"burst-{i}".encode() for i in range(20)]
    finally:
        pub.disconnect()
        pub.loop_stop()
        link.stop()
        broker.kill()


@pytest.mark.parametrize("protocol", sorted(LINKS))
def test_a_new_connection_starts_clean_after_the_broker_restarts(tmp_path: Path,
                                                                 protocol: str) -> None:
    broker = Broker(tmp_path).start()
    link = new_link(protocol, broker.port)
    link.start()
    try:
        pub = publisher(broker.port)
        for i in range(200):
            pub.publish(topics.cluster_telemetry("hd-c02"), f"before-{i}".encode(), qos=0)
        assert len(drain(link, 200)) == 200
        pub.loop_stop()
        broker.kill()
        wait_for(lambda: not link.connected.is_set(), 10, "the link to notice")
        assert not link.publish("loa/v1/area/hd/cmd", b"while down", 1)  # said, not hidden
        broker = Broker(tmp_path, port=broker.port).start()
        wait_for(link.connected.is_set, 20, "the link to reconnect")
        pub = publisher(broker.port)
        for i in range(200):
            pub.publish(topics.cluster_telemetry("hd-c02"), f"after-{i}".encode(), qos=1)
        got = drain(link, 200)
        assert [m.payload for m in got] == [f"after-{i}".encode() for i in range(200)]
        pub.disconnect()
        pub.loop_stop()
    finally:
        link.stop()
        broker.kill()


def test_the_controller_status_is_announced_on_connect_and_its_will_says_offline(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    seen: list[bytes] = []
    watcher = publisher(broker.port, "link-test-watch")
    watcher.on_message = lambda _c, _u, m: seen.append(m.payload)
    watcher.subscribe(topics.CONTROLLER_STATUS, qos=1)
    link = Mqtt5Link("127.0.0.1", broker.port, keepalive=5,
                     will=Outbound(topics.CONTROLLER_STATUS, b"offline", 1, True),
                     announce=lambda: Outbound(topics.CONTROLLER_STATUS, b"online", 1, True))
    link.start()
    try:
        wait_for(lambda: seen == [b"online"], 5, "the announcement")
        link.stop()  # a clean stop says offline itself
        wait_for(lambda: seen == [b"online", b"offline"], 5, "offline on a clean stop")
    finally:
        watcher.disconnect()
        watcher.loop_stop()
        link.stop()
        broker.kill()


def test_wait_written_returns_once_a_publish_is_on_the_wire_and_never_hangs(
        tmp_path: Path) -> None:
    """An emergency waits (briefly) for its command to leave before it writes its rows:
    the wait must end when the bytes are out, and must not hang on a dead link."""
    broker = Broker(tmp_path).start()
    link = new_link("5", broker.port)
    link.start()
    watcher = Watcher(broker.port, "loa/v1/area/hd/cmd")
    seen = watcher.got
    try:
        wait_for(link.connected.is_set, 10, "the link")
        for i in range(200):  # more than Mosquitto's receive maximum (20) in flight
            assert link.publish("loa/v1/area/hd/cmd", b"x" * 20_000 + str(i).encode(), 1)
        assert link.wait_written(5)
        wait_for(lambda: len(seen) == 200, 5, "every command at the subscriber")
        assert seen == [b"x" * 20_000 + str(i).encode() for i in range(200)]  # in order
        broker.kill()
        wait_for(lambda: not link.connected.is_set(), 10, "the link to notice")
        t0 = time.monotonic()
        assert not link.wait_written(0.2)
        assert time.monotonic() - t0 < 1.0
    finally:
        watcher.close()
        link.stop()
        broker.kill()


def test_the_protocol_is_chosen_by_asking_the_broker(tmp_path: Path) -> None:
    mosquitto = Broker(tmp_path).start()
    embedded = Broker(tmp_path / "amqtt", embedded=True).start()
    try:
        assert probe_mqtt5("127.0.0.1", mosquitto.port) is True
        assert probe_mqtt5("127.0.0.1", embedded.port) is False  # amqtt: 3.1.1 only
        assert isinstance(make_link("127.0.0.1", mosquitto.port), Mqtt5Link)
        link = make_link("127.0.0.1", embedded.port)
        assert isinstance(link, Mqtt311Link)
        link.subscribe([(topics.CLUSTER_EVENT_ALL, 1)])
        link.start()
        pub = publisher(embedded.port)
        pub.publish(topics.cluster_event("hd-c01"), b"hello", qos=1)
        assert drain(link, 1, timeout=10)[0].payload == b"hello"
        pub.disconnect()
        pub.loop_stop()
        link.stop()
    finally:
        mosquitto.kill()
        embedded.kill()


@pytest.mark.parametrize("protocol", sorted(LINKS))
def test_messages_past_a_full_inbox_are_dropped_and_counted(tmp_path: Path,
                                                            protocol: str) -> None:
    broker = Broker(tmp_path).start()
    link = new_link(protocol, broker.port, inbox_max=100)
    link.start()
    pub = publisher(broker.port)
    try:
        for i in range(300):
            pub.publish(topics.cluster_telemetry("hd-c04"), f"hb-{i}".encode(), qos=0)
        wait_for(lambda: link.counters["in"] == 300, 10, "every heartbeat read")
        assert link.counters["dropped_overload"] == 200
        assert [m.payload for m in link.inbox.take(1000, 0)] == \
            [f"hb-{i}".encode() for i in range(100)]  # the first ones, in order
    finally:
        pub.disconnect()
        pub.loop_stop()
        link.stop()
        broker.kill()


def test_a_quiet_link_stays_up_past_its_keepalive(tmp_path: Path) -> None:
    """Nothing to read and nothing to send for twice the keep-alive: the link pings the
    broker and stays on the same connection."""
    broker = Broker(tmp_path).start()
    link = new_link("5", broker.port, keepalive=2)
    connections: list[float] = []
    link.on_connect(lambda: connections.append(time.monotonic()))
    link.start()
    try:
        wait_for(link.connected.is_set, 5, "the link")
        time.sleep(4.5)  # the span under test: 2.25 x keep-alive of silence
        assert link.connected.is_set() and len(connections) == 1
    finally:
        link.stop()
        broker.kill()


@pytest.mark.parametrize("protocol", sorted(LINKS))
def test_the_session_keeps_what_came_while_down_and_what_was_never_acknowledged(
        tmp_path: Path, protocol: str) -> None:
    """With a stable client id and a lasting session, the broker delivers (again) a report
    the controller took but never acknowledged (it did not commit it), and one published
    while it was down."""
    broker = Broker(tmp_path).start()
    session = {"session_expiry_s": 3600} if protocol == "5" else {"persistent": True}
    link = new_link(protocol, broker.port, client_id="loa-controller-session-test", **session)
    link.start()
    pub = publisher(broker.port)
    topic = topics.cluster_event("hd-c01")
    try:
        assert link.connected.is_set()
        pub.publish(topic, b"taken, never committed", qos=1).wait_for_publish(5)
        taken = wait_for(lambda: link.inbox.take(10, timeout=0), 10, "the first report")
        assert [m.payload for m in taken] == [b"taken, never committed"]
        link.stop()  # (as a crash: nothing was acknowledged)
        pub.publish(topic, b"while down", qos=1).wait_for_publish(5)
        again = new_link(protocol, broker.port, client_id="loa-controller-session-test",
                         **session)
        again.start()
        got = drain(again, 2)
        assert [m.payload for m in got] == [b"taken, never committed", b"while down"]
        again.stop()
        # acknowledged now: a third connection gets nothing more
        third = new_link(protocol, broker.port, client_id="loa-controller-session-test",
                         **session)
        third.start()
        pub.publish(topic, b"marker", qos=1).wait_for_publish(5)
        assert [m.payload for m in drain(third, 1)] == [b"marker"]
        third.stop()
    finally:
        pub.disconnect()
        pub.loop_stop()
        broker.kill()
