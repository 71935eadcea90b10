"""An embedded MQTT broker (amqtt) for machines without one: fine for a demo or one commune,
not for a province (amqtt speaks MQTT 3.1.1 only and slows down past ~1,000 clients)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["EmbeddedBroker", "free_port", "port_free"]


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
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
    """``files_dir``: let in only the controller's credentials from that folder
    (:mod:`controller.transport.broker_access`); None: anyone connects (tests only)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883,
                 files_dir: Path | None = None):
        self.host, self.port, self.files_dir = host, port, files_dir
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}",
                                      "max_connections": 5000}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        if self.files_dir is not None:
            where = {"files_dir": str(self.files_dir)}
            # credentials only: amqtt's topic filtering races its own delivery loop
            # (controller.transport.broker_access); Mosquitto enforces the ACL
            config["plugins"] = {
                "controller.transport.broker_access.RegistryAuthPlugin": where}
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
