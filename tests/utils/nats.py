"""A 3-node NATS cluster on loopback with JetStream and its MQTT listener (MQTT 3.1.1), to
kill a node and start it again: the clustered broker Loa is tested on. Its MQTT streams
and consumers are replicated on every node (as an operator would set it up for a node
loss; docs/scaling.md says what a node loss still does)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.utils.broker import free_port, port_open, wait_for


def nats_binary() -> str | None:
    return shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None)


needs_nats = pytest.mark.skipif(nats_binary() is None,
                                reason="needs nats-server (apt-get install nats-server)")


@dataclass
class NatsCluster:
    workdir: Path
    size: int = 3
    mqtt_ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mqtt_ports = [free_port() for _ in range(self.size)]
        self._client_ports = [free_port() for _ in range(self.size)]
        self._route_ports = [free_port() for _ in range(self.size)]
        self.procs = [None] * self.size
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self._route_ports)
        for i in range(self.size):
            store = self.workdir / f"node{i}"
            store.mkdir(parents=True, exist_ok=True)
            (self.workdir / f"node{i}.conf").write_text(
                f"server_name: node{i}\nlisten: 127.0.0.1:{self._client_ports[i]}\n"
                f"jetstream {{ store_dir: {store}, max_mem: 128M, max_file: 1G }}\n"
                f"cluster {{ name: loa, listen: 127.0.0.1:{self._route_ports[i]}, "
                f"routes: [{routes}] }}\n"
                f"mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[i]}, stream_replicas: {min(3, self.size)}, consumer_replicas: {min(3, self.size)} }}\n")

    def url_of(self, i: int) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_ports[i]}"

    @property
    def url(self) -> str:
        """Every node, comma-separated (what a board is given)."""
        return ",".join(self.url_of(i) for i in range(self.size))

    def start(self, i: int | None = None) -> NatsCluster:
        binary = nats_binary()
        assert binary is not None
        for n in range(self.size) if i is None else [i]:
            with (self.workdir / f"node{n}.log").open("ab") as log:
                self.procs[n] = subprocess.Popen([binary, "-c", str(self.workdir / f"node{n}.conf")],
                                                 stdout=log, stderr=subprocess.STDOUT)
        for n in range(self.size) if i is None else [i]:
            wait_for(lambda n=n: port_open(self.mqtt_ports[n]), 30, f"NATS node {n} MQTT")
        # MQTT needs JetStream, which needs its cluster's leader
        wait_for(lambda: any("leader" in (self.workdir / f"node{n}.log").read_text()
                             for n in range(self.size)), 30, "a JetStream leader")
        return self

    def kill(self, i: int) -> None:
        p = self.procs[i]
        assert p is not None
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
                self.procs[i] = None
