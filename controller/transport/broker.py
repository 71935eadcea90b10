"""An embedded MQTT broker (amqtt) for machines without one: fine for a demo or one commune,
not for a province (amqtt speaks MQTT 3.1.1 only and slows down past ~1,000 clients)."""

from __future__ import annotations

import logging
import secrets
import socket
from pathlib import Path
from typing import Any

from controller.transport.broker_gate import BrokerGate

log = logging.getLogger(__name__)

__all__ = ["EmbeddedBroker", "free_port", "port_free"]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nobody listens on ``host:port`` (connections of a process that ended, still in
    TIME_WAIT, do not count: servers bind with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """``files_dir``: the controller's ``passwd`` and ``acl`` rule who connects and which
    topics each may write and read, as with Mosquitto: clients reach amqtt only through the
    door (:mod:`controller.transport.broker_gate`), amqtt listening on a loopback port of
    its own and letting in only what came through it. None: anyone connects, amqtt alone
    (tests only)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883,
                 files_dir: Path | None = None):
        self.host, self.port, self.files_dir = host, port, files_dir
        self._broker: Any = None
        self.gate: BrokerGate | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        inner = self.port if self.files_dir is None else free_port()
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{inner}"
                                      if self.files_dir is not None
                                      else f"{self.host}:{inner}",
                                      "max_connections": 5000}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        secret = secrets.token_bytes(32)
        if self.files_dir is not None:
            config["plugins"] = {"controller.transport.broker_access.GateAuthPlugin":
                                 {"gate_secret": secret.hex()}}
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(config)
        await self._broker.start()
        if self.files_dir is not None:
            self.gate = BrokerGate(self.host, self.port, ("127.0.0.1", inner),
                                   self.files_dir, secret)
            await self.gate.start()
        log.info("embedded MQTT broker (amqtt%s) listening on %s",
                 ", behind the registry's door" if self.gate else "", self.url)

    async def stop(self) -> None:
        if self.gate is not None:
            await self.gate.stop()
        if self._broker is not None:
            await self._broker.shutdown()
