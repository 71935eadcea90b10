"""The one broker helper of the test suite: a private broker on a free port (Mosquitto where
installed, else the embedded amqtt), to start, kill and restart; and ``wait_for``, which
polls for an outcome instead of sleeping for a fixed time."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.transport.broker import EmbeddedBroker, free_port

__all__ = ["Broker", "Watcher", "free_port", "mosquitto_binary", "needs_mosquitto", "port_open",
           "wait_for"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def mosquitto_binary() -> str | None:
    if os.environ.get("LOA_TEST_BROKER") == "amqtt":  # exercise the embedded broker path
        return None
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)


#: for tests of what only Mosquitto does (its password and ACL files, its TLS listener)
needs_mosquitto = pytest.mark.skipif(
    mosquitto_binary() is None, reason="needs the mosquitto binary (apt-get install mosquitto)")


@dataclass
class Broker:
    """A private broker on a free port: Mosquitto when installed, else embedded amqtt."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _embedded: tuple[threading.Thread, asyncio.AbstractEventLoop, EmbeddedBroker] | None = None
    extra_conf: str = ""
    #: embedded amqtt (MQTT 3.1.1 only) even where Mosquitto is installed
    embedded: bool = False
    #: False: only clients with credentials (the extra configuration names the files)
    anonymous: bool = True
    #: the embedded broker enforces the controller's passwd and acl in this folder
    files_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def kind(self) -> str:
        return "mosquitto" if mosquitto_binary() and not self.embedded else "amqtt"

    @property
    def embedded_broker(self) -> EmbeddedBroker:
        assert self._embedded is not None, "not an embedded broker"
        return self._embedded[2]

    def start(self) -> Broker:
        binary = None if self.embedded else mosquitto_binary()
        if binary:
            conf = self.workdir / f"mosquitto-{self.port}.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\n"
                            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
                            f"persistence false\nmax_queued_messages 100000\n{self.extra_conf}")
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            wait_for(lambda: port_open(self.port), 10, f"broker on port {self.port}")
        else:  # listening once start() returns (a bare TCP probe makes amqtt leak a socket)
            self._start_embedded()
        return self

    def _start_embedded(self) -> None:
        loop = asyncio.new_event_loop()
        broker = EmbeddedBroker(port=self.port, files_dir=self.files_dir)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(broker.start())
            ready.set()
            loop.run_forever()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        ready.wait(10)
        self._embedded = (t, loop, broker)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None
        if self._embedded is not None:
            t, loop, broker = self._embedded
            asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            t.join(10)
            if not loop.is_running():
                loop.close()  # its selector's sockets with it
            self._embedded = None


class Watcher:
    """An independent MQTT client (paho) that records every payload arriving on one topic
    filter: what went over the broker, whatever the controller or the simulator say."""

    def __init__(self, port: int, topic: str, name: str | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[bytes] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=name or f"watch-{free_port()}")
        self.client.on_message = lambda _c, _u, m: self.got.append(m.payload)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        if not subscribed.wait(5):
            raise AssertionError(f"the watcher could not subscribe to {topic}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # no cycle through the callbacks: the client goes with the watcher, and paho closes
        # its sockets then (collected later, as a cycle, they were reported unclosed)
        self.client.on_message = self.client.on_subscribe = None
