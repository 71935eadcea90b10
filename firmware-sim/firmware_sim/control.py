"""The simulator's control channel: a tiny HTTP/JSON server on its own port, kept apart
from the product's MQTT topics, to inject and clear faults at runtime.

    GET    /clusters                               every cluster, its state and faults
    POST   /clusters/{id|*}/faults/{fault}         body: JSON parameters (optional)
    DELETE /clusters/{id|*}/faults/{fault}

``*`` means every simulated cluster. Faults: see ``firmware_sim.faults``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from firmware_sim.cluster import SimCluster
from firmware_sim.faults import FAULTS, FaultError

log = logging.getLogger(__name__)

__all__ = ["ControlServer"]

MAX_BODY = 64 * 1024


class ControlServer:
    def __init__(self, clusters: list[SimCluster], host: str = "127.0.0.1", port: int = 0):
        self.clusters = {c.id: c for c in clusters}
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulator control channel on http://%s:%s", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if method == "GET" and parts == ["clusters"]:
            return 200, [{"id": c.id, "connected": c.connected.is_set(),
                          "faults": c.physics.faults, "rssi_dbm": round(c.physics.rssi_dbm),
                          "amp_temp_c": round(c.physics.amp_temp_c, 1),
                          "battery_pct": round(c.physics.battery_pct)}
                         for c in self.clusters.values()]
        if len(parts) != 4 or parts[0] != "clusters" or parts[2] != "faults":
            return 404, {"error": "use /clusters/{id}/faults/{fault}"}
        target, fault = parts[1], parts[3]
        if fault not in FAULTS:
            return 400, {"error": f"unknown fault {fault!r}", "faults": FAULTS}
        chosen = list(self.clusters.values()) if target == "*" else (
            [self.clusters[target]] if target in self.clusters else [])
        if not chosen:
            return 404, {"error": f"no simulated cluster {target!r}"}
        if method == "DELETE":
            for c in chosen:
                c.clear(fault)
            return 200, {"cleared": fault, "clusters": [c.id for c in chosen]}
        if method != "POST":
            return 405, {"error": "POST or DELETE"}
        try:
            params = json.loads(body) if body.strip() else {}
            if not isinstance(params, dict):
                raise ValueError("parameters must be a JSON object")  # noqa: TRY004 (a 400)
            results = [c.inject(fault, params) for c in chosen]  # every chosen cluster
            applied = results[0]
        except (ValueError, FaultError) as exc:
            return 400, {"error": str(exc)}
        return 200, {"injected": fault, "params": applied, "clusters": [c.id for c in chosen]}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length > MAX_BODY:
                status, payload = 413, {"error": "body too large"}
            else:
                body = await reader.readexactly(length) if length else b""
                status, payload = self.handle(method, path, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError) as exc:
            status, payload = 400, {"error": f"bad request: {exc}"}
        data = json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        try:
            await writer.drain()
        finally:
            writer.close()
