"""The controller's link to a broker that speaks only MQTT 3.1.1 (amqtt, which ``loa demo``
embeds on a machine without a broker): paho-mqtt's client, through its public API.

A demo or a single commune's traffic; a province's broker speaks MQTT 5 and gets
:class:`controller.transport.mqtt.Mqtt5Link`. Same contract as that link: while the link is
down ``publish`` returns False and nothing is queued behind the caller's back; with
``persistent`` the session outlives the connection (clean session off) and QoS 1 messages
are acknowledged only once their effects are committed (paho's ``manual_ack``).
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from controller.transport.link import Inbound, LinkBase, Outbound

log = logging.getLogger(__name__)

__all__ = ["Mqtt311Link"]


class Mqtt311Link(LinkBase):
    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, client_id: str | None = None, *,
                 inbox_max: int = 200_000, keepalive: int = 15,
                 will: Outbound | None = None,
                 announce: Callable[[], Outbound] | None = None,
                 persistent: bool = False, tls: ssl.SSLContext | None = None,
                 more: list[tuple[str, int]] | None = None):
        super().__init__(host, port, inbox_max)
        if more:  # (paho reconnects to one address, and will not change it mid-attempt)
            log.warning("the MQTT 3.1.1 link uses only the first broker node, %s:%s; "
                        "several nodes need MQTT 5", host, port)
        self.keepalive = keepalive
        self.will, self.announce = will, announce
        self._last: mqtt.MQTTMessageInfo | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"loa-controller-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311, clean_session=not persistent, manual_ack=True,
        )
        if username:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 10)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        #: the SUBSCRIBE whose SUBACK makes this connection count as up
        self._ready_on: int | None = None
        #: which connection this is: acknowledgements of an older one are not sent
        self._generation = 0

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        self._subscriptions.extend(filters)
        if self.connected.is_set():
            self._client.subscribe(filters)

    def start(self, wait_s: float = 10.0) -> None:
        if self.retained_mirror is not None:
            self.retained_mirror.start()
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        self._wait_connected(wait_s)

    def stop(self) -> None:
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
