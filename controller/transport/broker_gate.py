"""The door of the embedded broker: who may connect, publish, subscribe and receive, by the
controller's ``passwd`` and ``acl`` files, in front of amqtt.

amqtt's own topic check runs inside its delivery loop, across an ``await``, and a client
subscribing meanwhile ends that loop ("dictionary changed size during iteration": amqtt
0.12.1). So amqtt itself checks only that a connection came through this door, and the
door applies the rules Mosquitto applies to the same files:

* CONNECT: MQTT 3.1.1 (or 3.1) only; an MQTT 5 CONNECT is answered "unacceptable protocol
  version" at once, so a client falls back without waiting. The username and password must
  match a ``$7$`` entry of ``passwd``, and a Will may name only a topic the client may
  write; otherwise "not authorised" (return code 5). A board's client id becomes its
  username (as ``use_username_as_clientid``), so no credential can take over another
  client's session; the observer's is prefixed with its name; the controller keeps its own.
* PUBLISH from a client on a topic it may not write is dropped (acknowledged, as Mosquitto
  does, so the client does not retry it) and counted.
* SUBSCRIBE: a filter that can match nothing the client may read is refused (0x80 in the
  SUBACK); any other is granted, and each message is checked before it is delivered.
* PUBLISH to a client on a topic it may not read is dropped (and acknowledged to amqtt).

The framing is MQTT 3.1.1's (OASIS, section 2): a fixed header byte, a variable-length
remaining length, the rest. Only CONNECT, PUBLISH, PUBREL, SUBSCRIBE and SUBACK are read;
every other packet passes as it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from controller.access.broker_auth import CONTROLLER_USER, OBSERVER_USER
from controller.transport.broker_access import verify_mosquitto_hash
from controller.transport.link import topic_matches

log = logging.getLogger(__name__)

__all__ = ["BrokerGate", "Rules", "gate_password", "overlaps", "topic_matches"]

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK = 8, 9
#: the largest packet the door lets through (a content chunk is far smaller)
MAX_PACKET = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0

REFUSED_VERSION = bytes([0x20, 2, 0, 1])
REFUSED_AUTH = bytes([0x20, 2, 0, 5])


def gate_password(secret: bytes, username: str) -> str:
    """What the door tells amqtt in place of the client's password: proof that the
    connection came through the door (the secret lives only in this process)."""
    return hmac.new(secret, username.encode(), hashlib.sha256).hexdigest()


def overlaps(a: str, b: str) -> bool:
    """Is there a topic both filters match?"""
    x, y = a.split("/"), b.split("/")
    for i in range(max(len(x), len(y))):
        u = x[i] if i < len(x) else None
        v = y[i] if i < len(y) else None
        if u == "#" or v == "#":
            return True
        if u is None or v is None:
            return False
        if u != "+" and v != "+" and u != v:
            return False
    return True


@dataclass
class Rules:
    """``passwd`` and ``acl`` as the controller writes them (Mosquitto's formats: ``user``
    sections of ``topic read|write|readwrite PATTERN`` lines), read again when they change."""

    folder: Path
    passwords: dict[str, str] = field(default_factory=dict)
    read: dict[str, list[str]] = field(default_factory=dict)
    write: dict[str, list[str]] = field(default_factory=dict)
    _stamp: tuple[float, float] | None = None

    def load(self) -> Rules:
        try:
            stamp = (os.stat(self.folder / "passwd").st_mtime,
                     os.stat(self.folder / "acl").st_mtime)
        except OSError:
            self.passwords, self.read, self.write, self._stamp = {}, {}, {}, None
            return self
        if stamp == self._stamp:
            return self
        passwords: dict[str, str] = {}
        for line in (self.folder / "passwd").read_text().splitlines():
            name, _, hashed = line.partition(":")
            if name and hashed:
                passwords[name] = hashed
        read: dict[str, list[str]] = {}
        write: dict[str, list[str]] = {}
        user: str | None = None
        for raw in (self.folder / "acl").read_text().splitlines():
            words = raw.split()
            if len(words) == 2 and words[0] == "user":
                user = words[1]
            elif words[:1] == ["topic"] and user is not None and len(words) in (2, 3):
                access, pattern = (words[1], words[2]) if len(words) == 3 else ("readwrite",
                                                                                  words[1])
                if access in ("read", "readwrite"):
                    read.setdefault(user, []).append(pattern)
                if access in ("write", "readwrite"):
                    write.setdefault(user, []).append(pattern)
        self.passwords, self.read, self.write, self._stamp = passwords, read, write, stamp
        return self

    def authenticate(self, username: str | None, password: bytes | None) -> bool:
        if not username or password is None:
            return False
        hashed = self.passwords.get(username)
        try:
            text = password.decode()
        except UnicodeDecodeError:
            return False
        return hashed is not None and verify_mosquitto_hash(text, hashed)

    def may_write(self, user: str, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.write.get(user, ()))

    def may_read(self, user: str, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.read.get(user, ()))

    def may_subscribe(self, user: str, topic_filter: str) -> bool:
        return any(overlaps(p, topic_filter) for p in self.read.get(user, ()))


class _Bad(Exception):
    """A packet the door will not pass: the connection ends."""


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """(first byte, the whole packet, its body), or IncompleteReadError at the end."""
    head = await reader.readexactly(1)
    length, multiplier, raw_len = 0, 1, b""
    for _ in range(4):
        b = await reader.readexactly(1)
        raw_len += b
        length += (b[0] & 0x7F) * multiplier
        if not b[0] & 0x80:
            break
        multiplier *= 128
    else:
        raise _Bad("malformed remaining length")
    if length > MAX_PACKET:
        raise _Bad(f"packet of {length} bytes")
    body = await reader.readexactly(length) if length else b""
    return head[0], head + raw_len + body, body


def _encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(buf):
        raise _Bad("truncated string")
    (n,) = struct.unpack_from("!H", buf, pos)
    if pos + 2 + n > len(buf):
        raise _Bad("truncated string")
    return buf[pos + 2:pos + 2 + n], pos + 2 + n


def _pack_string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


@dataclass
class _Connect:
    name: bytes
    level: int
    flags: int
    keepalive: int
    client_id: bytes
    will_topic: bytes | None
    will_message: bytes | None
    username: str | None
    password: bytes | None

    @classmethod
    def parse(cls, body: bytes) -> _Connect:
        name, pos = _string(body, 0)
        if pos + 4 > len(body):
            raise _Bad("truncated CONNECT")
        level, flags = body[pos], body[pos + 1]
        (keepalive,) = struct.unpack_from("!H", body, pos + 2)
        if level == 5:  # MQTT 5: not parsed further, refused by version
            return cls(name, level, flags, keepalive, b"", None, None, None, None)
        client_id, pos = _string(body, pos + 4)
        will_topic = will_message = None
        if flags & 0x04:
            will_topic, pos = _string(body, pos)
            will_message, pos = _string(body, pos)
        username = password = None
        if flags & 0x80:
            raw, pos = _string(body, pos)
            try:
                username = raw.decode()
            except UnicodeDecodeError:
                raise _Bad("username not UTF-8") from None
        if flags & 0x40:
            password, pos = _string(body, pos)
        return cls(name, level, flags, keepalive, client_id, will_topic, will_message,
                   username, password)

    def forward(self, client_id: bytes, password: str) -> bytes:
        """The CONNECT amqtt sees: the client's, with the door's client id and password."""
        assert self.username is not None
        flags = (self.flags & 0x3E) | 0x80 | 0x40  # (bit 0 reserved)
        body = (_pack_string(self.name) + bytes([self.level, flags])
                + struct.pack("!H", self.keepalive) + _pack_string(client_id))
        if self.will_topic is not None and self.will_message is not None:
            body += _pack_string(self.will_topic) + _pack_string(self.will_message)
        body += _pack_string(self.username.encode()) + _pack_string(password.encode())
        return bytes([CONNECT << 4]) + _encode_length(len(body)) + body


def _publish_topic(first: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, QoS, packet id bytes) of a PUBLISH."""
    raw, pos = _string(body, 0)
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise _Bad("PUBLISH with QoS 3")
    pid = body[pos:pos + 2] if qos else b""
    if qos and len(pid) != 2:
        raise _Bad("truncated PUBLISH")
    try:
        return raw.decode(), qos, pid
    except UnicodeDecodeError:
        raise _Bad("topic not UTF-8") from None


def _ack(kind: int, pid: bytes) -> bytes:
    return bytes([(kind << 4) | (0x02 if kind == PUBREL else 0), 2]) + pid


def _drop(sender: asyncio.StreamWriter, dropped: set[bytes], qos: int, pid: bytes) -> None:
    """A PUBLISH the door will not pass, acknowledged to the side that sent it as if it
    had been (QoS 1: PUBACK; QoS 2: PUBREC, and the PUBREL that follows is completed here)."""
    if qos == 1:
        sender.write(_ack(PUBACK, pid))
    elif qos == 2:
        dropped.add(pid)
        sender.write(_ack(PUBREC, pid))


def _completed(sender: asyncio.StreamWriter, dropped: set[bytes], body: bytes) -> bool:
    """A PUBREL for a QoS 2 PUBLISH the door dropped: completed here, not passed on."""
    if body[:2] not in dropped:
        return False
    dropped.discard(body[:2])
    sender.write(_ack(PUBCOMP, body[:2]))
    return True


@dataclass
class _Conn:
    """One client's connection through the door, and its connection to amqtt."""

    gate: BrokerGate
    user: str
    client_r: asyncio.StreamReader
    client_w: asyncio.StreamWriter
    up_r: asyncio.StreamReader
    up_w: asyncio.StreamWriter
    #: SUBSCRIBE packet id → the positions of its filters the door refused
    refused_subs: dict[bytes, list[int]] = field(default_factory=dict)
    #: QoS 2 packet ids the door dropped and completes itself, per direction
    dropped_in: set[bytes] = field(default_factory=set)
    dropped_out: set[bytes] = field(default_factory=set)

    async def from_client(self) -> None:
        rules = self.gate.rules
        while True:
            first, packet, body = await _read_packet(self.client_r)
            kind = first >> 4
            if kind == PUBLISH:
                topic, qos, pid = _publish_topic(first, body)
                if not rules.load().may_write(self.user, topic):
                    self.gate.count("publish_refused")
                    log.debug("broker door: %s may not publish on %s (dropped)", self.user, topic)
                    _drop(self.client_w, self.dropped_in, qos, pid)
                    continue
            elif kind == PUBREL and _completed(self.client_w, self.dropped_in, body):
                continue
            elif kind == SUBSCRIBE:
                pid, pos, refused, i = body[:2], 2, [], 0
                while pos < len(body):
                    raw, pos = _string(body, pos)
                    pos += 1  # requested QoS
                    if not rules.load().may_subscribe(self.user, raw.decode(errors="replace")):
                        refused.append(i)
                        self.gate.count("subscribe_refused")
                    i += 1
                if refused:
                    self.refused_subs[pid] = refused
            elif kind == CONNECT:
                raise _Bad("a second CONNECT")
            self.up_w.write(packet)
            await self.up_w.drain()

    async def from_broker(self) -> None:
        rules = self.gate.rules
        while True:
            first, packet, body = await _read_packet(self.up_r)
            kind = first >> 4
            if kind == PUBLISH:
                topic, qos, pid = _publish_topic(first, body)
                if not rules.load().may_read(self.user, topic):
                    self.gate.count("delivery_refused")
                    _drop(self.up_w, self.dropped_out, qos, pid)
                    continue
            elif kind == PUBREL and _completed(self.up_w, self.dropped_out, body):
                continue
            elif kind == SUBACK and body[:2] in self.refused_subs:
                codes = bytearray(body[2:])
                for i in self.refused_subs.pop(body[:2]):
                    if i < len(codes):
                        codes[i] = 0x80
                packet = bytes([first]) + _encode_length(len(body)) + body[:2] + bytes(codes)
            self.client_w.write(packet)
            await self.client_w.drain()


class BrokerGate:
    """Listens on ``host:port`` and passes each authenticated connection to amqtt at
    ``upstream`` (loopback), by the rules in ``files_dir``."""

    def __init__(self, host: str, port: int, upstream: tuple[str, int], files_dir: Path,
                 secret: bytes):
        self.host, self.port, self.upstream = host, port, upstream
        self.rules = Rules(Path(files_dir))
        self.secret = secret
        self.counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def count(self, what: str) -> None:
        self.counts[what] += 1

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    def _client_id(self, user: str, given: bytes) -> bytes:
        if user == CONTROLLER_USER:
            return given or b"loa-controller"
        if user == OBSERVER_USER:
            return f"{OBSERVER_USER}/".encode() + given[:64]
        return user.encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        up_w: asyncio.StreamWriter | None = None
        try:
            first, _packet, body = await asyncio.wait_for(_read_packet(reader),
                                                          CONNECT_TIMEOUT_S)
            if first >> 4 != CONNECT:
                raise _Bad("the first packet is not CONNECT")
            hello = _Connect.parse(body)
            if hello.level not in (3, 4):
                self.count("connect_refused_version")
                writer.write(REFUSED_VERSION)
                await writer.drain()
                return
            rules = self.rules.load()
            user = hello.username
            if (user is None or not rules.authenticate(user, hello.password)
                    or (hello.will_topic is not None
                        and not rules.may_write(user, hello.will_topic.decode(errors="replace")))):
                self.count("connect_refused_auth")
                log.debug("broker door: connection refused (user %r)", user)
                writer.write(REFUSED_AUTH)
                await writer.drain()
                return
            up_r, up_w = await asyncio.open_connection(*self.upstream)
            up_w.write(hello.forward(self._client_id(user, hello.client_id),
                                     gate_password(self.secret, user)))
            await up_w.drain()
            conn = _Conn(self, user, reader, writer, up_r, up_w)
            pumps = [asyncio.ensure_future(conn.from_client()),
                     asyncio.ensure_future(conn.from_broker())]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                for p in pumps:
                    with contextlib.suppress(BaseException):
                        await p
                    if not p.cancelled() and isinstance(p.exception(), _Bad):
                        self.count("bad_packet")
                        log.debug("broker door: %s: %s", user, p.exception())
        except (_Bad, TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            if isinstance(exc, _Bad):
                self.count("bad_packet")
            log.debug("broker door: connection ended: %s", exc)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            for w in (writer, up_w):
                if w is not None:
                    w.close()
