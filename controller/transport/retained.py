"""Retained messages through every node of a broker cluster whose retained store is each
node's own (RabbitMQ 3.x: a retained message reaches only subscribers of the node it was
published on; docs/scaling.md, "A clustered broker").

Loa relies on three retained things that every board must see, whatever its node: the
controller's status (a board sends nothing until it reads ``online``), and an emergency's
audio chunks (a board fetches them on receiving the command), and their clearing. With
``LOA_MQTT_RETAINED_EVERY_NODE`` the controller keeps one plain MQTT 3.1.1 connection per
node for them: each announces the controller (so the boards there re-send their births),
carries the controller's Will (so every node says ``offline`` when it dies), republishes
what is retained on connecting (a node that was down learns it again), and publishes each
retained message as the controller's link does. The controller's subscriptions, commands
and acknowledgements stay on its one link; reports reach it from any node as QoS 1 does.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from controller.transport.link import Outbound

log = logging.getLogger(__name__)

__all__ = ["RetainedMirror"]


class RetainedMirror:
    def __init__(self, nodes: list[tuple[str, int]], username: str | None,
                 password: str | None, client_id: str, *, will: Outbound | None,
                 announce: Callable[[], Outbound] | None, tls: ssl.SSLContext | None = None,
                 keepalive: int = 15):
        self.nodes = nodes
        self.will, self.announce = will, announce
        self.keepalive = keepalive
        #: what is retained now, by topic (a zero-length payload clears it)
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._lock = threading.Lock()
        self._clients: list[mqtt.Client] = []
        for i, _node in enumerate(nodes):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id}-r{i}",
                            protocol=mqtt.MQTTv311, clean_session=True)
            if username:
                c.username_pw_set(username, password)
            if tls is not None:
                c.tls_set_context(tls)
            if will is not None:
                c.will_set(will.topic, will.payload, qos=will.qos, retain=True)
            c.reconnect_delay_set(1, 10)
            c.on_connect = self._on_connect
            self._clients.append(c)

    def start(self) -> None:
        for c, (host, port) in zip(self._clients, self.nodes, strict=True):
            c.connect_async(host, port, keepalive=self.keepalive)
            c.loop_start()

    def stop(self) -> None:
        """Say ``offline`` on every node (the controller stops cleanly), then disconnect."""
        sent = []
        with self._lock:
            for c in self._clients:
                if self.will is not None and c.is_connected():
                    w = self.will
                    sent.append(c.publish(w.topic, w.payload, qos=w.qos, retain=True))
        for info in sent:
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        for c in self._clients:
            c.disconnect()
            c.loop_stop()
            c.on_connect = None  # (no cycle left: paho closes its sockets with the client)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """A retained message, on every node connected now (and on the others once they
        connect)."""
        with self._lock:
            if payload:
                self._retained[topic] = (payload, qos)
            else:
                self._retained.pop(topic, None)
            for c in self._clients:
                if c.is_connected():
                    c.publish(topic, payload, qos=qos, retain=True)

    def retained_count(self) -> int:
        with self._lock:
            return len(self._retained)

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object,
                    reason: mqtt.ReasonCode, _props: object) -> None:
        if reason.is_failure:
            log.error("MQTT retained copy: node refused the connection: %s", reason)
            return
        with self._lock:
            if self.announce is not None:
                a = self.announce()
                client.publish(a.topic, a.payload, qos=a.qos, retain=True)
            for topic, (payload, qos) in self._retained.items():
                client.publish(topic, payload, qos=qos, retain=True)
        log.info("MQTT retained copy connected to a broker node (%d retained)",
                 len(self._retained))
