"""The controller's link to a broker that speaks only MQTT 3.1.1 (amqtt, which ``loa demo``
embeds on a machine without a broker; NATS 2.9 and RabbitMQ 3.10 clusters): paho-mqtt's
client, through its public API. Given several nodes of a broker cluster, a node that has not
answered for ``NODE_TIMEOUT_S`` is left for the next, with a new paho client (paho reconnects
to one address and will not change it).

A demo or a single commune's traffic; a province's broker speaks MQTT 5 and gets
:class:`controller.transport.mqtt.Mqtt5Link`. Same contract as that link: while the link is
down ``publish`` returns False and nothing is queued behind the caller's back; with
``persistent`` the session outlives the connection (clean session off) and QoS 1 messages
are acknowledged only once their effects are committed (paho's ``manual_ack``).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from controller.transport.link import Inbound, LinkBase, Outbound

log = logging.getLogger(__name__)

__all__ = ["Mqtt311Link"]

#: with several broker nodes: how long a node may stay unreachable before the next is tried
NODE_TIMEOUT_S = 5.0


class Mqtt311Link(LinkBase):
    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, client_id: str | None = None, *,
                 inbox_max: int = 200_000, keepalive: int = 15,
                 will: Outbound | None = None,
                 announce: Callable[[], Outbound] | None = None,
                 persistent: bool = False, tls: ssl.SSLContext | None = None,
                 more: list[tuple[str, int]] | None = None):
        super().__init__(host, port, inbox_max, more)
        self.keepalive = keepalive
        self.will, self.announce = will, announce
        self._last: mqtt.MQTTMessageInfo | None = None
        self._client_id = client_id or f"loa-controller-{uuid.uuid4().hex[:8]}"
        self._username, self._password = username, password
        self._persistent, self._tls = persistent, tls
        self._client = self._new_client()
        #: with several broker nodes: moves the link to the next node when its node has not
        #: answered for ``NODE_TIMEOUT_S`` (paho reconnects to one address only)
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        #: the SUBSCRIBE whose SUBACK makes this connection count as up
        self._ready_on: int | None = None
        #: which connection this is: acknowledgements of an older one are not sent
        self._generation = 0

    def _new_client(self) -> mqtt.Client:
        """A paho client for the current node (a new one per node: paho will not change
        the address of a client that has connected)."""
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id,
                        protocol=mqtt.MQTTv311, clean_session=not self._persistent,
                        manual_ack=True)
        if self._username:
            c.username_pw_set(self._username, self._password)
        if self._tls is not None:
            c.tls_set_context(self._tls)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 10)
        if self.will is not None:
            w = self.will
            c.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    def _supervise(self) -> None:
        """While the link is down on one node for ``NODE_TIMEOUT_S``, try the next; the
        session (clean session off) is taken up there if the cluster keeps it."""
        down_since: float | None = None
        while not self._stopping.wait(0.5):
            if self.connected.is_set():
                down_since = None
                continue
            now = time.monotonic()
            if down_since is None:
                down_since = now
            elif now - down_since >= NODE_TIMEOUT_S:
                old = self._client
                old.loop_stop()
                old.disconnect()
                self._generation += 1  # (what the old client delivered is not acked on the new)
                self._next_node()
                self._client = self._new_client()
                self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
                self._client.loop_start()
                down_since = now

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        self._subscriptions.extend(filters)
        if self.connected.is_set():
            self._client.subscribe(filters)

    def start(self, wait_s: float = 10.0) -> None:
        if self.retained_mirror is not None:
            self.retained_mirror.start()
        self._stopping.clear()
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        if len(self.nodes) > 1:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                                name="mqtt-nodes")
            self._supervisor.start()
        self._wait_connected(wait_s)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
            self._supervisor = None
        if self.retained_mirror is not None:
            self.retained_mirror.stop()
        if self.connected.is_set() and self.announce is not None and self.will is not None:
            w = self.will
            info = self._client.publish(w.topic, w.payload, qos=w.qos, retain=w.retain)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        self._mirror(topic, payload, qos, retain)
        if not self.connected.is_set():
            self.counters["out_failed"] += 1
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.counters["out_failed"] += 1
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        self._last = info
        self.counters["out"] += 1
        return True

    def ack(self, msgs: list[Inbound]) -> None:
        gen = self._generation
        for m in msgs:  # (those of an older connection come again from the session)
            if m.token is not None and m.token[0] == gen:
                self._client.ack(m.token[1], 1)

    def wait_written(self, timeout: float) -> bool:
        """True once the last publish is acknowledged by the broker (paho's public API
        tells when a message is published, not when it is written)."""
        last = self._last
        if last is None:
            return self.connected.is_set()
        try:
            last.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return last.is_published()

    # paho's network thread --------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object,
                    reason: mqtt.ReasonCode, _props: object) -> None:
        if reason.is_failure:
            log.error("MQTT connect refused: %s", reason)
            return
        self._generation += 1
        if self.announce is not None:
            a = self.announce()
            client.publish(a.topic, a.payload, qos=a.qos, retain=a.retain)
        if self._subscriptions:
            _, self._ready_on = client.subscribe(self._subscriptions)
        else:
            self._ready()

    def _on_subscribe(self, _c: mqtt.Client, _ud: object, mid: int,
                      reasons: list[mqtt.ReasonCode], _props: object) -> None:
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("the broker refused %d subscription(s): %s", len(failed), failed)
        if mid == self._ready_on:
            self._ready_on = None
            self._ready()

    def _ready(self) -> None:
        """Connected and subscribed: now the link counts as up."""
        self._connected_now("MQTT 3.1.1")

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
        token = (self._generation, msg.mid) if msg.qos else None
        fast = self.fast
        if token is None and fast is not None and fast(topic, bytes(msg.payload),
                                                       time.time_ns() // 1000):
            self.counters["in_fast"] += 1
            return
        if self.early is not None:
            self.early(topic, bytes(msg.payload))
        if not self.inbox.put(Inbound(topic, bytes(msg.payload), token)):
            self.counters["dropped_overload"] += 1
