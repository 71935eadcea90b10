"""The controller's MQTT link (paho-mqtt 2, callback API v2).

paho runs every callback on its one network thread, so ``on_message`` only enqueues; the
ingest thread does the work. The controller announces itself with a retained
``loa/v1/controller/status`` (online, with a fresh ``ts``) and a Last Will saying offline;
clusters re-send their births when they see a new ``ts``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices import topics
from devices.messages import ControllerStatus, dumps, now_utc

log = logging.getLogger(__name__)

__all__ = ["BufferedClient", "Inbound", "Inbox", "MqttLink"]


class Inbound(NamedTuple):
    topic: str
    payload: bytes


#: what the fast lane hands on: the QoS 0 PUBLISH packets (topic bytes, payload) parsed
#: from one buffered read, in order
RawPublishes = list[tuple[bytes, bytes]]


#: at most this many acknowledgements merged into one send
MAX_MERGED_ACKS = 1024
_PUBACK = 0x40


def _mergeable(packet: dict[str, Any]) -> bool:
    """A PUBACK not yet partly written."""
    return bool(packet["command"] & 0xF0 == _PUBACK and packet["pos"] == 0)


class BufferedClient(mqtt.Client):
    """paho's client, reading the socket 64 KiB at a time, with a fast lane for QoS 0
    PUBLISH packets.

    Stock paho reads each packet with three or four ``recv`` calls (command byte, length
    bytes one by one, then the rest) and one ``select`` per packet. Each call releases the
    GIL, and the ingest thread is waiting for it: at thousands of heartbeats a second the
    two threads spend more time handing the GIL back and forth than working (the heartbeat
    benchmark runs ~1.5x faster with this). Here ``recv`` fills a buffer that paho's own
    parser consumes, and ``loop_read`` keeps parsing while buffered bytes remain (the socket
    would not select readable for them). Relies on paho 2.x's ``_sock_recv`` (pinned <3).

    Fast lane: with ``on_raw_publishes`` set (MQTT 3.1.1, no per-topic callbacks), the
    complete QoS 0 PUBLISH packets at the head of the buffer (heartbeats: nearly all the
    traffic) are cut out of it here and handed on in one call, without paho building a
    packet dict, an ``MQTTMessage`` and a log line for each. A QoS 0 PUBLISH needs no
    reply and changes no session state, so nothing else in paho is bypassed. Everything
    else (QoS 1/2, acks, a packet cut by the end of the buffer, anything malformed) goes
    through paho's parser as before; paho itself refuses what is malformed.
    """

    _rbuf: bytes = b""
    _rpos: int = 0
    _rsock: object = None
    on_raw_publishes: Callable[[RawPublishes], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: notified whenever the network thread has written out everything queued
        self._drained = threading.Condition()

    def _packet_write(self) -> mqtt.MQTTErrorCode:
        """Acknowledgements queued one after another go out in one ``send``: a burst of
        reports (an emergency's ``playing`` from every cluster) is read 64 KiB at a time
        and each QoS 1 report queues a 4-byte PUBACK; one system call per PUBACK was most
        of this thread's time during the burst. Only the network thread writes, so the
        run at the head of the queue is its own to merge (other threads only append)."""
        out = self._out_packet
        if len(out) > 1 and _mergeable(out[0]) and _mergeable(out[1]):
            run = [out.popleft()]
            while out and _mergeable(out[0]) and len(run) < MAX_MERGED_ACKS:
                run.append(out.popleft())
            data = b"".join(p["packet"] for p in run)
            # (paho does nothing on a written PUBACK beyond counting its bytes)
            out.appendleft({**run[0], "packet": data, "to_process": len(data), "pos": 0})
        return super()._packet_write()

    def loop_write(self) -> mqtt.MQTTErrorCode:
        rc = super().loop_write()
        if not self._out_packet:
            with self._drained:
                self._drained.notify_all()
        return rc

    def wait_written(self, timeout: float) -> bool:
        """Block until every packet queued so far is in the socket (or ``timeout``): True
        when it is. The caller sleeps meanwhile, so the network thread is not kept waiting
        for the GIL between its system calls."""
        with self._drained:
            return self._drained.wait_for(lambda: not self._out_packet, timeout)

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
            if self.on_raw_publishes is not None and self._in_packet["command"] == 0 and \
                    self._fast_lane_open() and self._take_publishes():
                continue  # the buffer may now be empty, or start with another kind
            rc = super().loop_read(max_packets)
        return rc

    def _fast_lane_open(self) -> bool:
        return self._protocol != mqtt.MQTTv5 and not self._on_message_filtered._root._children

    def _take_publishes(self) -> bool:
        """Cut the complete QoS 0 PUBLISH packets at the head of the buffer and hand them on.
        False when the head is anything else (paho's parser takes it)."""
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        out: RawPublishes = []
        while pos < end:
            # fixed header: PUBLISH (3), DUP 0, QoS 0; RETAIN either (a retained heartbeat
            # is still a heartbeat)
            if buf[pos] & 0xFE != 0x30:
                break
            i, length, shift = pos + 1, 0, 0
            while i < end and shift <= 21:
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break  # length cut by the end of the buffer (or over 4 bytes: paho refuses)
            if i + length > end or length < 2:
                break  # the packet is not all here yet (or malformed): paho's parser
            topic_len = (buf[i] << 8) | buf[i + 1]
            if topic_len == 0 or 2 + topic_len > length:
                break  # malformed: paho refuses it
            out.append((buf[i + 2:i + 2 + topic_len], buf[i + 2 + topic_len:i + length]))
            pos = i + length
        if not out:
            return False
        self._rpos = pos
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        hand_on = self.on_raw_publishes
        if hand_on is not None:
            try:
                hand_on(out)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_raw_publishes: %s",
                               err)
                if not self.suppress_exceptions:
                    raise
        return True

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

    def put_many(self, items: list[Inbound]) -> int:
        """Appends what fits; returns how many did not (the caller counts the drops)."""
        room = self.maxsize - len(self._q)
        if room < len(items):
            self._q.extend(items[:max(room, 0)])
            dropped = len(items) - max(room, 0)
        else:
            self._q.extend(items)
            dropped = 0
        if not self._ready.is_set():
            self._ready.set()
        return dropped

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
        self._client.on_raw_publishes = self._on_raw_publishes

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

    def wait_written(self, timeout: float) -> bool:
        """Block until what was published so far is written to the broker's socket (or
        ``timeout``); True when it is. For a caller that has just put something urgent on
        the wire and has CPU-heavy work next (an emergency's rows): without the wait the
        network thread gets the GIL back only between that work's switch intervals (5 ms),
        once per system call of its write, and the command left 20-35 ms late."""
        return self._client.wait_written(timeout)

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
        if not self.inbox.put(Inbound(topic, msg.payload)):
            self.counters["dropped_overload"] += 1

    def _on_raw_publishes(self, batch: RawPublishes) -> None:
        """The fast lane's QoS 0 messages (heartbeats), a buffered read's worth at a time."""
        self.counters["in"] += len(batch)
        items = []
        for topic, payload in batch:
            try:
                items.append(Inbound(topic.decode(), payload))
            except UnicodeDecodeError:
                self.counters["dropped_bad_topic"] += 1
        dropped = self.inbox.put_many(items)
        if dropped:
            self.counters["dropped_overload"] += dropped
