"""The simulated board's MQTT client: one connection (:class:`Session`) at a time.

MQTT 5 is our own small asyncio protocol over the ``mqtt5`` codec (a sans-IO MQTT 5
codec written in Rust): hundreds of simulated boards share one process, and an emergency
reaches all of them at once, so each received packet costs one decode and each sent one a
single ``write``. Brokers that speak only MQTT 3.1.1 (amqtt, embedded by ``loa demo``)
get aiomqtt, through its public API.

A session ends with :class:`MqttError` when its link is lost. :meth:`Session.cut` loses
the link as a power cut does: the broker publishes the board's Will.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple, Protocol

import aiomqtt
import mqtt5

log = logging.getLogger(__name__)

__all__ = ["Message", "MqttError", "NoConnack", "ProtocolUnsupported", "Session", "connect",
           "quiet_lost_links"]


#: how long a CONNECT waits for its CONNACK
CONNACK_TIMEOUT_S = 5.0


class MqttError(Exception):
    """The link failed or was lost."""


class ProtocolUnsupported(MqttError):
    """The broker does not speak MQTT 5 (it answered as a 3.1.1 broker, or hung up)."""


class NoConnack(ProtocolUnsupported):
    """No answer to an MQTT 5 CONNECT in time: amqtt (3.1.1 only) does this, and so may a
    broker that is merely overloaded."""


class Message(NamedTuple):
    topic: str
    payload: bytes
    #: when its bytes came off the socket (ns since the epoch, true time): what a board's
    #: network driver would stamp, for the clock exchange's t4 (protocol §4.5)
    arrived_ns: int = 0


class Session(Protocol):
    async def subscribe(self, filters: list[tuple[str, int]]) -> None: ...

    async def unsubscribe(self, pattern: str) -> None: ...

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 10.0) -> None: ...

    def messages(self) -> AsyncIterator[Message]: ...

    def unread(self) -> int: ...

    def cut(self) -> None: ...


@asynccontextmanager
async def connect(host: str, port: int, *, client_id: str, will: Message, keepalive: int,
                  username: str | None = None, password: str | None = None,
                  v5: bool = True, tls: ssl.SSLContext | None = None) -> AsyncIterator[Session]:
    """A connected session (MQTT 5, or 3.1.1 with ``v5=False``), its Will a retained QoS 1
    ``will``; closed cleanly when the block ends (the Will is then not published). ``tls``:
    inside TLS, the broker's certificate checked against it (mqtts)."""
    if v5:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(
                lambda: _V5Session(keepalive), host, port, ssl=tls,
                server_hostname=host if tls is not None else None)
        except OSError as exc:
            raise MqttError(f"cannot connect: {exc}") from None
        try:
            await proto.handshake(client_id, will, username, password)
            yield proto
        finally:
            proto.close()
        return
    client = aiomqtt.Client(
        host, port, identifier=client_id, keepalive=keepalive, username=username,
        password=password, protocol=aiomqtt.ProtocolVersion.V311, clean_session=True,
        tls_context=tls,
        will=aiomqtt.Will(will.topic, will.payload, qos=1, retain=True))
    session = _V311Session(client, will)
    try:
        async with client:
            yield session
    except aiomqtt.MqttError as exc:
        raise MqttError(str(exc)) from None


class _V5Session(asyncio.Protocol):
    def __init__(self, keepalive: int):
        self.keepalive = keepalive
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._inbox: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[object]] = {}
        self._connack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._lost: MqttError | None = None
        self._next_id = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._in_flight: asyncio.Semaphore | None = None
        self._last_write = self._last_read = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_read = time.monotonic()
        buf = self._buf + data if self._buf else data
        now_ns = time.time_ns()
        view, pos, end = memoryview(buf), 0, len(buf)
        acks: list[bytes] = []
        arrived = False
        while pos < end:
            if not self._connack.done() and buf[pos:pos + 2] == b"\x20\x02":
                self._fail(ProtocolUnsupported("an MQTT 3.1.1 broker"))
                return
            try:
                packet, n = mqtt5.read(view[pos:])
            except IndexError:
                break  # the rest is on its way
            except ValueError as exc:
                self._fail(MqttError(f"malformed packet from the broker: {exc}"))
                return
            pos += n
            if isinstance(packet, mqtt5.PublishPacket):
                self._inbox.append(Message(packet.topic, packet.payload, now_ns))
                arrived = True
                if packet.packet_id is not None:
                    acks.append(mqtt5.PubAckPacket(packet.packet_id).write())
            elif isinstance(packet, (mqtt5.PubAckPacket, mqtt5.SubAckPacket,
                                     mqtt5.UnsubAckPacket)):
                fut = self._waiting.pop(packet.packet_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(packet)
            elif isinstance(packet, mqtt5.ConnAckPacket):
                if not self._connack.done():
                    self._connack.set_result(packet)
            elif isinstance(packet, mqtt5.DisconnectPacket):
                self._fail(MqttError(f"disconnected by the broker: {packet.reason_code.name}"))
                return
        self._buf = bytes(view[pos:]) if pos < end else b""
        if acks:
            self._write(b"".join(acks))
        if arrived:
            self._arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(MqttError(f"link lost: {exc or 'closed'}"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- the session ----------------------------------------------------------------------

    async def handshake(self, client_id: str, will: Message, username: str | None,
                        password: str | None) -> None:
        self._write(mqtt5.ConnectPacket(
            client_id, username=username, password=password.encode() if password else None,
            clean_start=True, keep_alive=self.keepalive,
            will=mqtt5.Will(will.topic, payload=will.payload, qos=mqtt5.QoS.AT_LEAST_ONCE,
                            retain=True)).write())
        try:
            async with asyncio.timeout(CONNACK_TIMEOUT_S):
                connack = await self._connack
        except TimeoutError:
            # amqtt (3.1.1 only) neither answers nor hangs up on an MQTT 5 CONNECT with a Will
            raise NoConnack("no CONNACK to an MQTT 5 CONNECT") from None
        except MqttError as exc:
            if isinstance(exc, ProtocolUnsupported):
                raise
            raise ProtocolUnsupported(f"hung up on an MQTT 5 CONNECT ({exc})") from None
        assert isinstance(connack, mqtt5.ConnAckPacket)
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            raise MqttError(f"connection refused: {connack.reason_code.name}")
        self._in_flight = asyncio.Semaphore(max(1, connack.receive_max))
        self._schedule_keepalive()

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        pid = self._packet_id()
        await self._request(pid, mqtt5.SubscribePacket(pid, [
            mqtt5.TopicFilter(f, max_qos=mqtt5.QoS(q)) for f, q in filters]).write(), 10)

    async def unsubscribe(self, pattern: str) -> None:
        pid = self._packet_id()
        await self._request(pid, mqtt5.UnsubscribePacket(pid, [pattern]).write(), 10)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 10.0) -> None:
        """Returns once the broker has it (QoS 1: its PUBACK; QoS 0: written)."""
        if not self._writable.is_set():
            await self._wait_writable()
        if qos == 0:
            self._check()
            self._write(mqtt5.PublishPacket(topic, payload, retain=retain).write())
            return
        assert self._in_flight is not None
        async with self._in_flight:
            pid = self._packet_id()
            await self._request(pid, mqtt5.PublishPacket(
                topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=retain,
                packet_id=pid).write(), timeout)

    async def messages(self) -> AsyncIterator[Message]:
        inbox = self._inbox
        while True:
            while inbox:
                yield inbox.popleft()
            self._check()
            self._arrived.clear()
            await self._arrived.wait()

    def unread(self) -> int:
        return len(self._inbox)

    def cut(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._write(mqtt5.DisconnectPacket(
                reason_code=mqtt5.DisconnectReasonCode.DISCONNECT_WITH_WILL_MESSAGE).write())
            self._transport.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            if self._lost is None:
                self._write(mqtt5.DisconnectPacket().write())
            self._transport.close()

    # --- inside -------------------------------------------------------------------------

    def _check(self) -> None:
        if self._lost is not None:
            raise self._lost

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._last_write = time.monotonic()

    async def _wait_writable(self) -> None:
        while not self._writable.is_set():
            self._check()
            await self._writable.wait()

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._waiting:
                return self._next_id
        raise MqttError("every packet id is in use")

    async def _request(self, pid: int, packet: bytes, timeout: float) -> object:
        self._check()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        self._write(packet)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise MqttError("operation timed out") from None
        finally:
            self._waiting.pop(pid, None)

    def _fail(self, error: MqttError) -> None:
        if self._lost is None:
            self._lost = error
        for fut in [self._connack, *self._waiting.values()]:
            if not fut.done():
                fut.set_exception(self._lost)
                fut.exception()  # retrieved: whoever awaits it gets it too
        self._waiting.clear()
        self._arrived.set()
        self._writable.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _schedule_keepalive(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.keepalive / 2,
                                                            self._keepalive)

    def _keepalive(self) -> None:
        now = time.monotonic()
        if now - self._last_read > self.keepalive * 1.5:
            self._fail(MqttError("no packet from the broker for 1.5 x keep-alive"))
            return
        half = self.keepalive / 2
        if now - self._last_write >= half or now - self._last_read >= half:
            # the broker's silence is only news once it has been asked (PINGRESP)
            self._write(mqtt5.PingReqPacket().write())
        self._schedule_keepalive()


class _V311Session:
    """aiomqtt's client (MQTT 3.1.1). A cut publishes the Will's message itself, then ends
    the session: aiomqtt offers no way to drop a link without a clean DISCONNECT, and the
    controller sees the same retained death either way."""

    def __init__(self, client: aiomqtt.Client, will: Message):
        self._client = client
        self._will = will
        self._cut = asyncio.Event()
        self._dying: asyncio.Task[None] | None = None

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        try:
            await self._client.subscribe(filters)
        except aiomqtt.MqttError as exc:
            raise MqttError(str(exc)) from None

    async def unsubscribe(self, pattern: str) -> None:
        try:
            await self._client.unsubscribe(pattern)
        except aiomqtt.MqttError as exc:
            raise MqttError(str(exc)) from None

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 10.0) -> None:
        if self._cut.is_set():
            raise MqttError("link cut")
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        except aiomqtt.MqttError as exc:
            raise MqttError(str(exc)) from None

    async def messages(self) -> AsyncIterator[Message]:
        incoming = self._client.messages.__aiter__()
        cut = asyncio.ensure_future(self._cut.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(incoming.__anext__())
                await asyncio.wait({nxt, cut}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    raise MqttError("link cut")
                try:
                    msg = nxt.result()
                except aiomqtt.MqttError as exc:
                    raise MqttError(str(exc)) from None
                yield Message(msg.topic.value, bytes(msg.payload),  # type: ignore[arg-type]
                              time.time_ns())
        finally:
            cut.cancel()

    def unread(self) -> int:
        return len(self._client.messages)

    def cut(self) -> None:
        async def die() -> None:
            try:
                await self._client.publish(self._will.topic, self._will.payload, qos=1,
                                           retain=True, timeout=2)
            except aiomqtt.MqttError:
                pass
            self._cut.set()

        if self._dying is None:
            self._dying = asyncio.get_running_loop().create_task(die())


def quiet_lost_links(loop: asyncio.AbstractEventLoop) -> None:
    """aiomqtt (the 3.1.1 sessions) keeps a future that holds a lost link's error; when the
    link was lost while nobody was reading messages (a session still waiting for its
    SUBACK), nothing retrieves it and asyncio reports it as an error when it is collected.
    The session has already ended with that error: log it at debug level, and hand every
    other unhandled exception to the loop's default handler."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if isinstance(context.get("exception"), aiomqtt.MqttError):
            log.debug("a lost link's error, already handled: %s", context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

