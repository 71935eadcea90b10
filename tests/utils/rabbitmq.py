"""A 3-node RabbitMQ 3.10 cluster on loopback with its MQTT plugin (MQTT 3.1.1), to kill a
node: the second clustered broker these machines have, measured against what Loa relies on
(docs/scaling.md). The MQTT plugin keeps each client's session in a classic queue; the
cluster mirrors those queues on every node (a policy, as an operator would set it up for a
node loss)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.utils.broker import free_port, port_open, wait_for

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: the CLI itself (the wrapper on the PATH runs it as the rabbitmq user, who cannot read
#: the test's folders)
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
COOKIE = "loa-test-cluster-cookie"


def rabbitmq_present() -> bool:
    return Path(SERVER).exists() and Path(CTL).exists()


needs_rabbitmq = pytest.mark.skipif(not rabbitmq_present(),
                                    reason="needs rabbitmq-server (apt-get install rabbitmq-server)")


@dataclass
class RabbitCluster:
    workdir: Path
    size: int = 3
    mqtt_ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mqtt_ports = [free_port() for _ in range(self.size)]
        self._amqp_ports = [free_port() for _ in range(self.size)]
        self._dist_ports = [free_port() for _ in range(self.size)]
        self.names = [f"loa{i}x{self._dist_ports[i]}@localhost" for i in range(self.size)]
        self.procs = [None] * self.size
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / ".erlang.cookie").write_text(COOKIE)
        (self.workdir / ".erlang.cookie").chmod(0o400)
        for i in range(self.size):
            d = self.workdir / f"node{i}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
            (d / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = {self._amqp_ports[i]}\n"
                f"mqtt.listeners.tcp.default = {self.mqtt_ports[i]}\n"
                "mqtt.allow_anonymous = true\nloopback_users = none\n")

    def url_of(self, i: int) -> str:
        return f"mqtt://guest:guest@127.0.0.1:{self.mqtt_ports[i]}"

    def _env(self, i: int) -> dict[str, str]:
        d = self.workdir / f"node{i}"
        return {**os.environ, "HOME": str(self.workdir), "RABBITMQ_NODENAME": self.names[i],
                "RABBITMQ_DIST_PORT": str(self._dist_ports[i]),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(d / "pid"), "RABBITMQ_USE_LONGNAME": "false",
                "ERL_CRASH_DUMP": str(d / "erl_crash.dump")}

    def ctl(self, i: int, *args: str, timeout: float = 60) -> str:
        r = subprocess.run([CTL, "--erlang-cookie", COOKIE, "-n", self.names[i], *args],
                           capture_output=True, text=True, timeout=timeout,
                           env=self._env(i), cwd=self.workdir, check=False)
        assert r.returncode == 0, f"rabbitmqctl {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    def start(self) -> RabbitCluster:
        for i in range(self.size):
            with (self.workdir / f"node{i}.log").open("ab") as log:
                self.procs[i] = subprocess.Popen([SERVER], env=self._env(i), stdout=log,
                                                 stderr=subprocess.STDOUT, cwd=self.workdir,
                                                 start_new_session=True)
        for i in range(self.size):
            wait_for(lambda i=i: port_open(self.mqtt_ports[i]), 90, f"RabbitMQ node {i} MQTT")
        for i in range(1, self.size):
            self.ctl(i, "stop_app")
            self.ctl(i, "join_cluster", self.names[0])
            self.ctl(i, "start_app")
            wait_for(lambda i=i: port_open(self.mqtt_ports[i]), 60, f"RabbitMQ node {i} back")
        # every MQTT session's queue mirrored on every node (classic mirrored queues: what
        # 3.10's MQTT plugin can use)
        self.ctl(0, "set_policy", "loa-mqtt-ha", "^mqtt-subscription-",
                 '{"ha-mode":"all","ha-sync-mode":"automatic"}', "--apply-to", "queues")
        return self

    def add_users(self, names: list[str], password: str) -> None:
        """Broker accounts (all of one password), each free to publish and subscribe: what
        a board connects with (its cluster id as the user name). One import for them all."""
        def hashed(pw: str) -> str:  # RabbitMQ's salted SHA-256
            salt = os.urandom(4)
            return base64.b64encode(salt + hashlib.sha256(salt + pw.encode()).digest()).decode()

        defs = {"users": [{"name": n, "password_hash": hashed(password), "tags": [],
                           "hashing_algorithm": "rabbit_password_hashing_sha256"} for n in names],
                "permissions": [{"user": n, "vhost": "/", "configure": ".*", "write": ".*",
                                 "read": ".*"} for n in names]}
        f = self.workdir / "users.json"
        f.write_text(json.dumps(defs))
        self.ctl(0, "import_definitions", str(f))

    def clients_on(self, i: int) -> set[tuple[str, str]]:
        """(client id, user name) of the MQTT clients connected through node ``i`` now (the
        plugin lists the whole cluster's, each with the port it came in on)."""
        alive = next(n for n in range(self.size) if self.procs[n] is not None)
        out = self.ctl(alive, "list_mqtt_connections", "client_id", "user", "port",
                       "--no-table-headers", "--quiet")
        rows = [line.split("\t") for line in out.splitlines() if line.count("\t") == 2]
        return {(cid, user) for cid, user, port in rows
                if port.strip() == str(self.mqtt_ports[i])}

    def users_on(self, i: int) -> set[str]:
        return {user for _cid, user in self.clients_on(i)}

    def kill(self, i: int) -> None:
        p = self.procs[i]
        assert p is not None
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(30)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
                self.procs[i] = None
