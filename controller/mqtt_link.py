"""The controller's MQTT link (paho-mqtt 2, callback API v2).

paho runs every callback on its one network thread, so ``on_message`` only enqueues; the
ingest thread does the work. The controller announces itself with a retained
``loa/v1/controller/status`` (online, with a fresh ``ts``) and a Last Will saying offline;
clusters re-send their births when they see a new ``ts``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices import topics
from devices.messages import ControllerStatus, dumps, now_utc

log = logging.getLogger(__name__)

__all__ = ["BufferedClient", "Inbox", "Inbound", "MqttLink"]


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    received: float  # time.time()


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket 64 KiB at a time.

    Stock paho reads each packet with three or four ``recv`` calls (command byte, length
    bytes one by one, then the rest) and one ``select`` per packet. Each call releases the
    GIL, and the ingest thread is waiting for it: at thousands of heartbeats a second the
    two threads spend more time handing the GIL back and forth than working (the heartbeat
    benchmark runs ~1.5x faster with this). Here ``recv`` fills a buffer that paho's own
    parser consumes, and ``loop_read`` keeps parsing while buffered bytes remain (the socket
    would not select readable for them). Relies on paho 2.x's ``_sock_recv`` (pinned <3).
    """

    _rbuf: bytes = b""
    _rpos: int = 0
    _rsock: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._rsock:  # a new connection: nothing carries over
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)  # b"" (closed) and exceptions go to paho as is
            if len(data) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        pos = self._rpos
        out = self._rbuf[pos:pos + bufsize]
        self._rpos = pos + len(out)
        return out

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and \
                self._sock is self._rsock and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """paho matches every message against the per-topic callbacks
        (``message_callback_add``) under a lock, even when there are none. The link
        registers none, so a message goes straight to ``on_message``; with any registered,
        paho's own dispatch runs."""
        on_message = self.on_message
        if self._on_message_filtered._root._children or on_message is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise


class Inbox:
    """What the paho thread hands the ingest thread: a bounded FIFO that the ingest thread
    takes in batches. ``queue.Queue`` takes a lock and signals a condition per message on
    both sides; here a put is a deque append (atomic under the GIL) and the waiting side is
    woken only when it may be asleep."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._q: deque[Inbound] = deque()
        self._ready = threading.Event()

    def put(self, item: Inbound) -> bool:
        """False when full (the caller counts the drop)."""
        if len(self._q) >= self.maxsize:
            return False
        self._q.append(item)
        if not self._ready.is_set():
            self._ready.set()
        return True

    def take(self, max_items: int, timeout: float) -> list[Inbound]:
        """Up to ``max_items`` in arrival order; waits up to ``timeout`` for the first."""
        if not self._q:
            self._ready.clear()
            if not self._q:  # re-checked after clear: a put in between is not missed
                self._ready.wait(timeout)
        q, out = self._q, []
        for _ in range(min(max_items, len(q))):
            out.append(q.popleft())
        return out

    def qsize(self) -> int:
        return len(self._q)


class MqttLink:
    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, client_id: str | None = None,
                 inbox_max: int = 200_000):
        self.host, self.port = host, port
        self.inbox = Inbox(inbox_max)
        self.counters: Counter[str] = Counter()
        self.connected = threading.Event()
        self._on_connect_hooks: list[Callable[[], None]] = []
        self._client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"loa-controller-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311, clean_session=True,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(0.5, 10)
        self._client.will_set(topics.CONTROLLER_STATUS,
                              dumps(ControllerStatus(v=1, state="offline")), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def on_connect(self, hook: Callable[[], None]) -> None:
        self._on_connect_hooks.append(hook)

    def start(self, wait_s: float = 10.0) -> None:
        self._client.connect_async(self.host, self.port, keepalive=15)
        self._client.loop_start()
        if not self.connected.wait(wait_s):
            log.warning("MQTT broker %s:%s not reachable yet; retrying in the background",
                        self.host, self.port)

    def stop(self) -> None:
        if self.connected.is_set():
            info = self._client.publish(
                topics.CONTROLLER_STATUS,
                dumps(ControllerStatus(v=1, state="offline", ts=now_utc())), qos=1, retain=True)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.counters["out_failed"] += 1
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        self.counters["out"] += 1
        return True

    # paho thread ----------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object,
                    reason: mqtt.ReasonCode, _props: object) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        client.subscribe([(topics.CLUSTER_STATUS_ALL, 1), (topics.CLUSTER_TELEMETRY_ALL, 0),
                          (topics.CLUSTER_EVENT_ALL, 1)])
        client.publish(topics.CONTROLLER_STATUS,
                       dumps(ControllerStatus(v=1, state="online", ts=now_utc())), qos=1,
                       retain=True)
        self.connected.set()
        log.info("MQTT connected to %s:%s", self.host, self.port)
        for hook in self._on_connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("on_connect hook failed")

    def _on_disconnect(self, _c: mqtt.Client, _ud: object, _flags: object,
                       reason: mqtt.ReasonCode, _props: object) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("MQTT link lost (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        self.counters["in"] += 1
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # a broker should refuse such a topic; drop and count
            self.counters["dropped_bad_topic"] += 1
            return
        if not self.inbox.put(Inbound(topic, msg.payload, time.time())):
            self.counters["dropped_overload"] += 1
