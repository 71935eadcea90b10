"""The embedded broker's door (controller/transport/broker_gate.py), tried as an attacker
with a stolen or forged credential would: the real amqtt behind it, real sockets, the
controller's own file formats. (The whole fleet against it: tests/integration/
test_broker_security.py, where the same attacks run against Mosquitto too.)"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.access.broker_auth import CONTROLLER_USER, mosquitto_hash
from controller.transport.broker_gate import overlaps, topic_matches
from devices import topics
from tests.utils.broker import Broker, wait_for

SECRETS = {CONTROLLER_USER: "controller-secret-0123456789", "hd-c03": "c03-secret-0123456789",
           "hd-c04": "c04-secret-0123456789"}


def _acl(boards: list[str]) -> str:
    lines = [f"user {CONTROLLER_USER}", f"topic readwrite {topics.ROOT}/#", ""]
    for cid in boards:
        lines += [f"user {cid}", f"topic write {topics.cluster_status(cid)}",
                  f"topic write {topics.cluster_event(cid)}",
                  f"topic read {topics.cluster_cmd(cid)}",
                  f"topic read {topics.area_cmd('hd-v02')}", ""]
    return "\n".join(lines) + "\n"


def _write(folder: Path, boards: list[str]) -> None:
    users = [CONTROLLER_USER, *boards]
    (folder / "passwd").write_text("".join(f"{u}:{mosquitto_hash(SECRETS[u])}\n" for u in users))
    (folder / "acl").write_text(_acl(boards))


@pytest.fixture()
def door(tmp_path: Path) -> Iterator[Broker]:
    files = tmp_path / "broker"
    files.mkdir()
    _write(files, ["hd-c03", "hd-c04"])
    broker = Broker(tmp_path, embedded=True, files_dir=files).start()
    try:
        yield broker
    finally:
        broker.kill()


class Client:
    def __init__(self, port: int, user: str | None, password: str | None = None,
                 client_id: str | None = None, will: tuple[str, bytes] | None = None):
        self.got: list[tuple[str, bytes]] = []
        self.answer: Any = None
        self.dropped = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.c.username_pw_set(user, password if password is not None else SECRETS[user])
        if will:
            self.c.will_set(will[0], will[1], qos=1)
        self.c.on_connect = lambda _c, _u, _f, rc, _p=None: setattr(self, "answer", rc)
        self.c.on_disconnect = lambda *_a: self.dropped.set()
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_for(lambda: self.answer is not None or self.dropped.is_set(), 10, "CONNACK")

    @property
    def connected(self) -> bool:
        return self.answer == 0 and not self.dropped.is_set()

    def subscribe(self, *filters: str) -> list[int]:
        done: list[Any] = []
        self.c.on_subscribe = lambda _c, _u, _m, codes, _p: done.append(codes)
        self.c.subscribe([(f, 1) for f in filters])
        wait_for(lambda: done, 5, "SUBACK")
        return [int(c.value) for c in done[0]]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_patterns_and_filters_match_as_mqtt_says() -> None:
    assert topic_matches("loa/v1/cluster/+/status", "loa/v1/cluster/hd-c03/status")
    assert topic_matches("loa/v1/#", "loa/v1")
    assert not topic_matches("loa/v1/cluster/hd-c03/cmd", "loa/v1/cluster/hd-c04/cmd")
    assert not topic_matches("loa/v1/+", "loa/v1/a/b")
    assert overlaps("loa/#", "loa/v1/cluster/hd-c03/cmd")
    assert overlaps("loa/v1/cluster/+/cmd", "loa/v1/cluster/hd-c03/+")
    assert not overlaps("loa/v1/cluster/hd-c04/#", "loa/v1/cluster/hd-c03/cmd")
    assert not overlaps("loa/v1/area/x/cmd", "loa/v1/area/x")


def test_an_mqtt5_connect_is_told_the_version_at_once(door: Broker) -> None:
    body = (struct.pack("!H", 4) + b"MQTT" + bytes([5, 0x02]) + struct.pack("!H", 30)
            + b"\x00" + struct.pack("!H", 2) + b"v5")  # (no properties, client id "v5")
    with socket.create_connection(("127.0.0.1", door.port), timeout=2) as s:
        t0 = time.monotonic()
        s.sendall(bytes([0x10, len(body)]) + body)
        assert s.recv(4) == bytes([0x20, 2, 0, 1])  # unacceptable protocol version
        assert time.monotonic() - t0 < 1.0


def test_nobody_goes_round_the_door(door: Broker) -> None:
    """amqtt's own port (loopback) refuses even a board's real password."""
    inner = door.embedded_broker.gate.upstream[1]
    probe = Client(inner, "hd-c03")
    try:
        assert not probe.connected
    finally:
        probe.close()
    probe = Client(door.port, "hd-c03")  # the same credential at the door: in
    try:
        assert probe.connected
    finally:
        probe.close()


def test_a_will_may_speak_only_for_its_own_board(door: Broker) -> None:
    forged = Client(door.port, "hd-c03", will=(topics.cluster_status("hd-c04"),
                                               b'{"v":1,"state":"offline"}'))
    honest = Client(door.port, "hd-c03", will=(topics.cluster_status("hd-c03"),
                                               b'{"v":1,"state":"offline"}'))
    try:
        assert forged.answer == 5 or not forged.connected  # not authorised
        assert honest.connected
    finally:
        forged.close()
        honest.close()


def test_a_board_cannot_take_the_controllers_session(door: Broker) -> None:
    controller = Client(door.port, CONTROLLER_USER, client_id="loa-controller-main")
    controller.subscribe(topics.CLUSTER_EVENT_ALL)
    thief = Client(door.port, "hd-c03", client_id="loa-controller-main")
    try:
        assert thief.connected
        thief.c.publish(topics.cluster_event("hd-c03"), b"still here?", qos=1).wait_for_publish(5)
        wait_for(lambda: (topics.cluster_event("hd-c03"), b"still here?") in controller.got, 5,
                 "the controller, still connected, hearing the board")
        assert controller.connected
    finally:
        thief.close()
        controller.close()


def test_a_refused_publish_is_dropped_at_every_qos_and_the_board_goes_on(door: Broker) -> None:
    witness = Client(door.port, CONTROLLER_USER)
    witness.subscribe(f"{topics.ROOT}/#")
    board = Client(door.port, "hd-c03")
    try:
        for qos in (0, 1, 2):
            info = board.c.publish(topics.cluster_event("hd-c04"), f"forged {qos}".encode(),
                                   qos=qos)
            info.wait_for_publish(5)  # acknowledged: no retry storm
            assert info.is_published()
        board.c.publish(topics.cluster_event("hd-c03"), b"own", qos=1).wait_for_publish(5)
        wait_for(lambda: (topics.cluster_event("hd-c03"), b"own") in witness.got, 5,
                 "the board's own event")
        assert not [p for _t, p in witness.got if p.startswith(b"forged")]
        assert board.connected
        gate = door.embedded_broker.gate
        assert gate.counts["publish_refused"] == 3
    finally:
        board.close()
        witness.close()


def test_a_board_reads_only_its_own_whatever_it_subscribes_to(door: Broker) -> None:
    controller = Client(door.port, CONTROLLER_USER)
    board = Client(door.port, "hd-c03")
    try:
        codes = board.subscribe("loa/#", topics.cluster_cmd("hd-c04"), topics.cluster_cmd("hd-c03"))
        assert codes[1] == 0x80 and codes[0] != 0x80 and codes[2] != 0x80
        for cid in ("hd-c04", "hd-c03"):
            controller.c.publish(topics.cluster_cmd(cid), cid.encode(), qos=1).wait_for_publish(5)
        controller.c.publish(topics.cluster_status("hd-c04"), b"c04 status", qos=1,
                             retain=True).wait_for_publish(5)
        wait_for(lambda: (topics.cluster_cmd("hd-c03"), b"hd-c03") in board.got, 5,
                 "its own command")
        assert all(t in (topics.cluster_cmd("hd-c03"),) for t, _p in board.got), board.got
    finally:
        board.close()
        controller.close()


def test_a_revoked_board_is_cut_off_from_its_next_packet(door: Broker, tmp_path: Path) -> None:
    """The files change (retire, replace): the door reads them again; a board still
    connected can no longer publish or read anything."""
    witness = Client(door.port, CONTROLLER_USER)
    witness.subscribe(f"{topics.ROOT}/#")
    board = Client(door.port, "hd-c04")
    board.subscribe(topics.cluster_cmd("hd-c04"))
    try:
        time.sleep(0.01)  # (a new mtime for the files)
        _write(tmp_path / "broker", ["hd-c03"])
        board.c.publish(topics.cluster_event("hd-c04"), b"after", qos=1).wait_for_publish(5)
        witness.c.publish(topics.cluster_cmd("hd-c04"), b"cmd", qos=1).wait_for_publish(5)
        witness.c.publish(topics.cluster_event("hd-c03"), b"marker", qos=1).wait_for_publish(5)
        wait_for(lambda: (topics.cluster_event("hd-c03"), b"marker") in witness.got, 5, "marker")
        assert (topics.cluster_event("hd-c04"), b"after") not in witness.got
        assert board.got == []
        again = Client(door.port, "hd-c04")
        try:
            assert not again.connected
        finally:
            again.close()
    finally:
        board.close()
        witness.close()


@pytest.mark.parametrize("junk", [
    b"\x30\xff\xff\xff\x7f",                # a PUBLISH of 256 MB announced
    b"\x10\x05\x00\x04MQ",                  # a CONNECT cut short
    b"\x82\x02\x00\x01" * 3,               # SUBSCRIBE before CONNECT
    b"\x10\xff\xff\xff\xff\xff",            # a remaining length of five bytes
])
def test_junk_ends_that_connection_and_nothing_else(door: Broker, junk: bytes) -> None:
    board = Client(door.port, "hd-c03")
    try:
        with socket.create_connection(("127.0.0.1", door.port), timeout=3) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(16) in (b"", bytes([0x20, 2, 0, 5]))  # closed (no access)
        assert board.connected
        board.c.publish(topics.cluster_event("hd-c03"), b"ok", qos=1).wait_for_publish(5)
        other = Client(door.port, "hd-c04")
        assert other.connected
        other.close()
    finally:
        board.close()
