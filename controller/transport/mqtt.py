"""The controller's MQTT 5 link: our own socket, packets encoded and decoded by ``mqtt5``
(a sans-IO MQTT 5 codec written in Rust).

One network thread reads the socket 64 KiB at a time and decodes every packet in the
block; a province's heartbeats arrive at tens of thousands a second, and a general-purpose
client's per-packet system calls and Python parsing were most of the controller's CPU.
Messages go to the :class:`~controller.transport.link.Inbox` a read at a time; the QoS 1
acknowledgements of one read leave in one ``send``. Publishing writes from the caller's
thread (under a lock), so a publish that returned True is in the kernel's socket buffer.

Session: a stable client id and a session that outlives the connection (``clean_start``
off, a session expiry interval), QoS 1 subscriptions. While the controller is down (a
restart, a crash) the broker keeps what clusters report for it, and a QoS 1 message is
acknowledged only once the ingest thread has committed its effects (:meth:`Mqtt5Link.ack`),
so a report taken off the wire but never committed is delivered again. The controller
announces itself with a retained ``loa/v1/controller/status`` (online, with a fresh ``ts``)
after each connection and leaves a Last Will saying offline, so clusters re-send their
births when they see a new ``ts``. A QoS 1 publish not yet acknowledged when the link drops
is sent again (DUP) on the next connection; commands are idempotent by id. While the link is down
``publish`` returns False: the caller decides what a message that was never sent means.

Brokers that speak only MQTT 3.1.1 (amqtt, embedded by ``loa demo``) are served by
:class:`controller.transport.mqtt311.Mqtt311Link`; :func:`make_link` picks one.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import mqtt5

from controller.transport.link import Inbound, Link, LinkBase, Outbound

if TYPE_CHECKING:
    from controller.transport.mqtt311 import Mqtt311Link

log = logging.getLogger(__name__)

__all__ = ["BrokerRefused", "Mqtt5Link", "ProtocolUnsupported", "make_link", "probe_mqtt5"]

READ_SIZE = 65536
#: a write that cannot go on for this long means the broker has stopped reading
WRITE_TIMEOUT_S = 10.0
#: QoS 1 publishes kept back while the broker's receive maximum is reached (with those in
#: flight, never more than the 65,535 packet ids there are)
MAX_HELD = 60_000


class BrokerRefused(ConnectionError):
    """The broker answered CONNECT with a failure reason (bad credentials, not allowed)."""


class ProtocolUnsupported(ConnectionError):
    """The broker does not speak MQTT 5 (it answered as an MQTT 3.1.1 broker, or hung up)."""


def _connack_or_refusal(sock: socket.socket,
                        deadline: float) -> tuple[mqtt5.ConnAckPacket, bytes]:
    """The CONNACK, and what came after it in the same read (a resumed session's queued
    messages follow the CONNACK at once)."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no CONNACK from the broker")
        sock.settimeout(left)
        data = sock.recv(READ_SIZE)
        if not data:
            raise ProtocolUnsupported("the broker closed the connection on an MQTT 5 CONNECT")
        buf += data
        if buf[:1] == b"\x20" and len(buf) >= 4 and buf[1] == 2:
            # a 3.1.1 CONNACK (two bytes, return code 1: unacceptable protocol version)
            raise ProtocolUnsupported(f"MQTT 3.1.1 broker (CONNACK return code {buf[3]})")
        try:
            packet, n = mqtt5.read(memoryview(buf))
        except IndexError:
            continue
        if not isinstance(packet, mqtt5.ConnAckPacket):
            raise ConnectionError(f"expected CONNACK, got {type(packet).__name__}")
        return packet, buf[n:]


def open_socket(host: str, port: int, timeout: float,
                tls: ssl.SSLContext | None = None) -> socket.socket:
    """A TCP connection to the broker, inside TLS when ``tls`` is given (mqtts)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def probe_mqtt5(host: str, port: int, username: str | None = None,
                password: str | None = None, timeout: float = 5.0,
                tls: ssl.SSLContext | None = None) -> bool | None:
    """Does the broker at ``host:port`` speak MQTT 5? None when it cannot be reached."""
    try:
        sock = open_socket(host, port, timeout, tls)
    except OSError:
        return None
    try:
        sock.sendall(mqtt5.ConnectPacket(
            f"loa-probe-{uuid.uuid4().hex[:8]}", username=username,
            password=password.encode() if password else None, clean_start=True).write())
        _connack_or_refusal(sock, time.monotonic() + timeout)
        sock.sendall(mqtt5.DisconnectPacket().write())
        return True
    except ProtocolUnsupported:
        return False
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


class Mqtt5Link(LinkBase):
    """An MQTT 5 connection that stays up: it reconnects (jittered back-off, 0.5 s to
    10 s), subscribes again and re-sends what was not acknowledged."""

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, client_id: str | None = None, *,
                 inbox_max: int = 200_000, keepalive: int = 15,
                 will: Outbound | None = None,
                 announce: Callable[[], Outbound] | None = None,
                 session_expiry_s: int = 0,
                 tls: ssl.SSLContext | None = None,
                 more: list[tuple[str, int]] | None = None):
        super().__init__(host, port, inbox_max, more)
        self.username, self.password = username, password
        self.tls = tls
        self.client_id = client_id or f"loa-controller-{uuid.uuid4().hex[:8]}"
        #: how long the broker keeps this session (and queues for it) after a disconnect;
        #: 0 (and no stable client id) is a session for this connection only
        self.session_expiry_s = session_expiry_s
        #: which connection this is: acknowledgements of an older one are not sent
        self._generation = 0
        self.session_present = False
        self.keepalive = keepalive
        self.will, self.announce = will, announce
        self._wlock = threading.Lock()
        self._drained = threading.Condition(self._wlock)
        self._sock: socket.socket | None = None  # set while publishing is possible
        self._next_id = 0
        self._inflight: dict[int, bytes] = {}  # QoS 1 written, not yet acknowledged
        self._held: deque[tuple[int, bytes]] = deque()  # over the broker's receive maximum
        self._held_ids: set[int] = set()
        self._receive_max = 65535
        self._last_write = time.monotonic()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_control_id = 0
        #: the SUBSCRIBE whose SUBACK makes this connection count as up
        self._ready_on: int | None = None

    # --- Link -------------------------------------------------------------------------

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Filters kept for every connection; sent at once when connected."""
        self._subscriptions.extend(filters)
        with self._wlock:
            if self._sock is not None:
                self._write_locked(self._subscribe_packet(filters))

    def start(self, wait_s: float = 10.0) -> None:
        if self.retained_mirror is not None:
            self.retained_mirror.start()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()
        self._wait_connected(wait_s)

    def stop(self) -> None:
        if self.connected.is_set() and self.announce is not None and self.will is not None:
            # say offline ourselves (retained), and give it two seconds to be acknowledged
            w = self.will
            self.publish(w.topic, w.payload, w.qos, w.retain)
            deadline = time.monotonic() + 2.0
            while self._inflight and self.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.retained_mirror is not None:
            self.retained_mirror.stop()
        self._stopping.set()
        with self._wlock:
            sock, self._sock = self._sock, None
            if sock is not None:
                try:
                    sock.sendall(mqtt5.DisconnectPacket().write())
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(5)
        self.connected.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        self._mirror(topic, payload, qos, retain)
        with self._wlock:
            if self._sock is None:
                self.counters["out_failed"] += 1
                return False
            if qos == 0:
                packet = mqtt5.PublishPacket(topic, payload, retain=retain).write()
                ok = self._write_locked(packet)
            else:
                pid = self._packet_id()
                if pid is None:  # 65,535 unacknowledged: the broker has stopped answering
                    self.counters["out_failed"] += 1
                    return False
                packet = mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE,
                                             retain=retain, packet_id=pid).write()
                if len(self._inflight) >= self._receive_max:
                    if len(self._held) >= MAX_HELD:
                        self.counters["out_failed"] += 1
                        return False
                    self._held.append((pid, packet))
                    self._held_ids.add(pid)
                    ok = True
                else:
                    self._inflight[pid] = packet
                    ok = self._write_locked(packet)
                    # written or not, it is in flight: a dropped link re-sends it
                    ok = True
        self.counters["out" if ok else "out_failed"] += 1
        return ok

    def ack(self, msgs: list[Inbound]) -> None:
        """Acknowledge the QoS 1 messages among ``msgs`` (their effects are committed)."""
        with self._wlock:
            gen = self._generation
            acks = [mqtt5.PubAckPacket(t[1]).write() for m in msgs
                    if (t := m.token) is not None and t[0] == gen]
            if acks and self._sock is not None:
                self._write_locked(b"".join(acks))
                self.counters["acked"] += len(acks)

    def wait_written(self, timeout: float) -> bool:
        """True once nothing is held back (everything published is in the kernel's socket
        buffer); False after ``timeout`` or while the link is down."""
        with self._drained:
            return self._drained.wait_for(
                lambda: not self._held or self._sock is None, timeout) and \
                self._sock is not None

    # --- writing (under _wlock) --------------------------------------------------------

    def _packet_id(self) -> int | None:
        """A packet id no unacknowledged or held publish uses (None: there is none)."""
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight and self._next_id not in self._held_ids:
                return self._next_id
        return None

    def _write_locked(self, data: bytes) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendall(data)
        except OSError as exc:
            log.warning("MQTT write failed (%s); dropping the connection", exc)
            self._drop_locked()
            return False
        self._last_write = time.monotonic()
        return True

    def _drop_locked(self) -> None:
        sock, self._sock = self._sock, None
        self.connected.clear()
        self._drained.notify_all()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _subscribe_packet(self, filters: list[tuple[str, int]]) -> bytes:
        # SUBSCRIBE ids share the space with publishes but are never tracked as in flight
        # (with every id taken, which only a broker that stopped answering causes, one is
        # shared: the broker then refuses the connection's state, and the link reconnects)
        self._last_control_id = self._packet_id() or self._next_id
        return mqtt5.SubscribePacket(self._last_control_id, [
            mqtt5.TopicFilter(f, max_qos=mqtt5.QoS(q)) for f, q in filters]).write()

    # --- the network thread ------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            sock = None
            try:
                sock, first = self._connect()
                backoff = 0.5
                self._read_loop(sock, first)
            except BrokerRefused as exc:
                log.error("MQTT connect refused: %s", exc)
            except (OSError, ValueError) as exc:  # ValueError: a malformed packet
                if not self._stopping.is_set():
                    log.warning("MQTT link to %s:%s lost (%s); reconnecting", self.host,
                                self.port, exc)
            except Exception:
                log.exception("MQTT link failed; reconnecting")
            finally:
                with self._wlock:
                    if self._sock is sock:
                        self._drop_locked()
                if sock is not None:
                    sock.close()
            if not self._stopping.is_set():
                self._next_node()
            if self._stopping.wait(backoff * (0.5 + random.random())):
                return
            backoff = min(backoff * 2, 10.0)

    def _connect(self) -> tuple[socket.socket, bytes]:
        """Connected (and the SUBSCRIBE on its way): the socket, and the bytes read after
        the CONNACK, which the read loop starts with."""
        sock = open_socket(self.host, self.port, 5, self.tls)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            will = None
            if self.will is not None:
                w = self.will
                will = mqtt5.Will(w.topic, payload=w.payload, qos=mqtt5.QoS(w.qos),
                                  retain=w.retain)
            sock.sendall(mqtt5.ConnectPacket(
                self.client_id, username=self.username,
                password=self.password.encode() if self.password else None,
                clean_start=self.session_expiry_s == 0, will=will, keep_alive=self.keepalive,
                session_expiry_interval=self.session_expiry_s).write())
            connack, after = _connack_or_refusal(sock, time.monotonic() + 10)
            if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
                raise BrokerRefused(connack.reason_code.name.lower())
            sock.settimeout(WRITE_TIMEOUT_S)
            self.session_present = connack.session_present
            with self._wlock:
                self._generation += 1
                self._receive_max = max(1, connack.receive_max)
                self._sock = sock
                self._ready_on = None
                if self._subscriptions:
                    packet = self._subscribe_packet(self._subscriptions)
                    self._ready_on = self._last_control_id
                    self._write_locked(packet)
                if self.announce is not None:
                    a = self.announce()
                    self._write_locked(mqtt5.PublishPacket(
                        a.topic, a.payload, qos=mqtt5.QoS(a.qos), retain=a.retain,
                        packet_id=(self._packet_id() or self._next_id) if a.qos else None
                    ).write())
                # what was in flight on the last connection goes again, then what was held
                for packet in self._inflight.values():
                    self._write_locked(bytes([packet[0] | 0x08]) + packet[1:])  # DUP
                self._release_held_locked()
                if self._sock is None:
                    raise ConnectionError("write failed while connecting")
        except BaseException:
            with self._wlock:
                if self._sock is sock:
                    self._drop_locked()
            sock.close()
            raise
        if self._ready_on is None:
            self._ready()
        return sock, after

    def _ready(self) -> None:
        """Connected and subscribed (the SUBACK is in): now the link counts as up."""
        self._connected_now(f"MQTT 5, receive maximum {self._receive_max}, session "
                            f"{'resumed' if self.session_present else 'new'}")

    def _release_held_locked(self) -> None:
        while self._held and len(self._inflight) < self._receive_max and self._sock is not None:
            pid, packet = self._held.popleft()
            self._held_ids.discard(pid)
            self._inflight[pid] = packet
            self._write_locked(packet)
        if not self._held:
            self._drained.notify_all()

    def _read_loop(self, sock: socket.socket, first: bytes = b"") -> None:
        rest = self._feed(first) if first else b""
        last_read = time.monotonic()
        half_keepalive = self.keepalive / 2
        while not self._stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 1.0)
            now = time.monotonic()
            if not readable:
                if now - last_read > self.keepalive * 1.5:
                    raise TimeoutError("no packet from the broker for 1.5 x keep-alive")
                if now - self._last_write > half_keepalive or now - last_read > half_keepalive:
                    # the broker's silence is only news once it has been asked (PINGRESP)
                    with self._wlock:
                        self._write_locked(mqtt5.PingReqPacket().write())
                continue
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionError("the broker closed the connection")
            last_read = now
            rest = self._feed(rest + data if rest else data)

    def _feed(self, data: bytes) -> bytes:
        """Decode every whole packet in ``data``; returns the bytes of an unfinished one."""
        arrived_us = time.time_ns() // 1000
        fast, early = self.fast, self.early
        view, pos, end = memoryview(data), 0, len(data)
        batch: list[Inbound] = []
        acked: list[int] = []
        gen = self._generation
        publish_type, puback_type = mqtt5.PublishPacket, mqtt5.PubAckPacket
        packet: mqtt5.Packet
        while pos < end:
            try:
                packet, n = mqtt5.read(view[pos:])
            except IndexError:
                break  # the rest of this packet is still on its way
            pos += n
            if isinstance(packet, publish_type):
                pid = packet.packet_id  # None for QoS 0
                if pid is None and fast is not None and fast(packet.topic, packet.payload,
                                                             arrived_us):
                    self.counters["in_fast"] += 1
                    continue
                if early is not None:
                    early(packet.topic, packet.payload)
                # QoS 1: acknowledged by the ingest thread once committed (ack())
                batch.append(Inbound(packet.topic, packet.payload,
                                     None if pid is None else (gen, pid)))
            elif isinstance(packet, puback_type):
                acked.append(packet.packet_id)
            else:
                self._control(packet)
        if batch:
            self.counters["in"] += len(batch)
            dropped = self.inbox.put_many(batch)
            if dropped:
                self.counters["dropped_overload"] += dropped
        if acked:
            with self._wlock:
                for pid in acked:
                    self._inflight.pop(pid, None)
                if self._held:
                    self._release_held_locked()
        return bytes(view[pos:])

    def _control(self, packet: object) -> None:
        if isinstance(packet, mqtt5.SubAckPacket):
            failed = [c for c in packet.reason_codes if int(c) >= 0x80]
            if failed:
                log.error("the broker refused %d subscription(s): %s", len(failed),
                          ", ".join(c.name for c in failed))
            if packet.packet_id == self._ready_on:
                self._ready_on = None
                self._ready()
        elif isinstance(packet, mqtt5.DisconnectPacket):
            raise ConnectionError(f"the broker disconnected us: {packet.reason_code.name}")
        elif isinstance(packet, (mqtt5.PingRespPacket, mqtt5.UnsubAckPacket)):
            pass
        else:
            self.counters["dropped_unexpected"] += 1
            log.warning("unexpected %s from the broker, ignored", type(packet).__name__)


def make_link(host: str, port: int, username: str | None = None,
              password: str | None = None, *, protocol: str = "auto",
              will: Outbound | None = None, announce: Callable[[], Outbound] | None = None,
              inbox_max: int = 200_000, client_id: str | None = None,
              session_expiry_s: int = 0, tls: ssl.SSLContext | None = None,
              more: list[tuple[str, int]] | None = None,
              retained_every_node: bool = False) -> Link:
    """The link for this broker: MQTT 5 (:class:`Mqtt5Link`) unless ``protocol`` says
    ``3.1.1`` or, with ``auto``, the broker answers an MQTT 5 CONNECT as a 3.1.1 broker.
    An unreachable broker under ``auto`` gets MQTT 5. With a ``client_id`` and a
    ``session_expiry_s``, the broker keeps the session (and queues QoS 1 messages for it)
    across disconnects and restarts of the controller. ``retained_every_node``: every
    retained message also goes through every node (:class:`RetainedMirror`)."""
    link = _make_link(host, port, username, password, protocol=protocol, will=will,
                      announce=announce, inbox_max=inbox_max, client_id=client_id,
                      session_expiry_s=session_expiry_s, tls=tls, more=more)
    if retained_every_node:
        from controller.transport.retained import RetainedMirror

        link.retained_mirror = RetainedMirror(
            [(host, port), *(more or [])], username, password,
            client_id or f"loa-controller-{uuid.uuid4().hex[:8]}", will=will,
            announce=announce, tls=tls)
    return link


def _make_link(host: str, port: int, username: str | None, password: str | None, *,
               protocol: str, will: Outbound | None, announce: Callable[[], Outbound] | None,
               inbox_max: int, client_id: str | None, session_expiry_s: int,
               tls: ssl.SSLContext | None, more: list[tuple[str, int]] | None
               ) -> Mqtt5Link | Mqtt311Link:
    if protocol == "auto":
        v5 = None
        for h, p in [(host, port), *(more or [])]:  # (the first node that answers)
            v5 = probe_mqtt5(h, p, username, password, tls=tls)
            if v5 is not None:
                break
        protocol = "3.1.1" if v5 is False else "5"
        if v5 is False:
            log.info("MQTT broker %s:%s speaks only MQTT 3.1.1", host, port)
    if protocol == "3.1.1":
        from controller.transport.mqtt311 import Mqtt311Link

        return Mqtt311Link(host, port, username, password, client_id, will=will,
                           announce=announce, inbox_max=inbox_max,
                           persistent=session_expiry_s > 0, tls=tls, more=more)
    if protocol != "5":
        raise ValueError(f"unknown MQTT protocol {protocol!r} (5, 3.1.1 or auto)")
    return Mqtt5Link(host, port, username, password, client_id, will=will, announce=announce,
                     inbox_max=inbox_max, session_expiry_s=session_expiry_s, tls=tls,
                     more=more)
