"""The link's fast lane for QoS 0 PUBLISH packets (heartbeats), fed raw MQTT bytes cut at
arbitrary places, as TCP delivers them: every message arrives whole and in order, whatever
lane it took; what the fast lane cannot take whole goes through paho's own parser."""

from __future__ import annotations

import itertools
import random

import pytest

from controller.transport.mqtt import MqttLink


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, retain: bool = False) -> bytes:
    """A QoS 0 PUBLISH packet (MQTT 3.1.1)."""
    var = len(topic).to_bytes(2, "big") + topic + payload
    return bytes([0x30 | int(retain)]) + remaining_length(len(var)) + var


class FakeSocket:
    """What paho reads from: the byte stream in the chunks given, then 'no data yet'."""

    def __init__(self, stream: bytes, cuts: list[int]):
        bounds = [0, *sorted(set(cuts)), len(stream)]
        self.chunks = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    def recv(self, bufsize: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks[0]
        if len(chunk) > bufsize:
            self.chunks[0] = chunk[bufsize:]
            return chunk[:bufsize]
        return self.chunks.pop(0)

    def close(self) -> None:
        self.chunks = []


def feed(link: MqttLink, stream: bytes, cuts: list[int]) -> None:
    client = link._client
    sock = FakeSocket(stream, cuts)
    client._sock = sock  # type: ignore[assignment]
    while sock.chunks:  # one loop_read per "socket readable", as paho's loop does
        assert client.loop_read() == 0


@pytest.fixture
def link() -> MqttLink:
    return MqttLink("127.0.0.1", 1)  # never started: fed bytes directly


@pytest.mark.parametrize("seed", range(8))
def test_messages_cut_anywhere_arrive_whole_and_in_order(link: MqttLink, seed: int) -> None:
    rng = random.Random(seed)
    sent = []
    for i in range(400):
        size = rng.choice([0, 1, 120, 300, 700, 16_000, 70_000 + i])
        topic = f"loa/v1/cluster/hd-c{i % 15:02d}/telemetry".encode()
        sent.append((topic.decode(), rng.randbytes(size)))
    stream = b"".join(publish(t.encode(), p, retain=i % 7 == 0) for i, (t, p) in enumerate(sent))
    cuts = [rng.randrange(len(stream)) for _ in range(rng.choice([5, 200, 3000]))]
    feed(link, stream, cuts)
    got = link.inbox.take(10_000, timeout=0)
    assert [(m.topic, m.payload) for m in got] == sent
    assert link.counters["in"] == len(sent)


def test_whole_heartbeats_take_the_fast_lane(link: MqttLink,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Of 50 heartbeats in two reads, paho's per-packet PUBLISH handling sees only the first
    (paho's own parser does the read) and the one cut by the end of the first read."""
    handled = []
    real = link._client._handle_publish
    monkeypatch.setattr(link._client, "_handle_publish",
                        lambda: (handled.append(1), real())[1])
    packets = [publish(b"loa/v1/cluster/hd-c01/telemetry", f"hb-{i}".encode())
               for i in range(50)]
    stream = b"".join(packets)
    first_cut = len(b"".join(packets[:30])) + 5  # 5 bytes into packet 30
    feed(link, stream, [first_cut])
    got = link.inbox.take(100, timeout=0)
    assert [m.payload for m in got] == [f"hb-{i}".encode() for i in range(50)]
    assert len(handled) == 2


def test_a_topic_that_is_not_utf8_is_dropped_and_counted(link: MqttLink) -> None:
    stream = (publish(b"loa/v1/cluster/hd-c01/telemetry", b"a")
              + publish(b"loa/v1/cluster/\xff\xfe/telemetry", b"b")
              + publish(b"loa/v1/cluster/hd-c02/telemetry", b"c"))
    feed(link, stream, [])
    assert [m.payload for m in link.inbox.take(10, timeout=0)] == [b"a", b"c"]
    assert link.counters["dropped_bad_topic"] == 1
    assert link.counters["in"] == 3


def test_a_full_inbox_drops_and_counts_the_excess(link: MqttLink) -> None:
    small = MqttLink("127.0.0.1", 1, inbox_max=10)
    stream = b"".join(publish(b"loa/v1/cluster/hd-c01/telemetry", b"%d" % i) for i in range(25))
    feed(small, stream, [])
    assert [m.payload for m in small.inbox.take(100, timeout=0)] == [b"%d" % i for i in range(10)]
    assert small.counters["dropped_overload"] == 15
