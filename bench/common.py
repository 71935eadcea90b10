"""Shared bench helpers: a private Mosquitto, a flooding publisher in its own process."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller.transport.broker import free_port


def _more_files(pid: int) -> None:
    """A province's clusters and as many bare subscribers are 20,000 connections and more:
    the broker may hold 65,536 files where this user may raise its limit that far."""
    for limit in (65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
            return
        except (ValueError, OSError):
            continue


class Mosquitto:
    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise SystemExit("the benchmarks need the mosquitto binary")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="loa-bench-"))
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _more_files(self.proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, path = int(sys.argv[1]), sys.argv[2]
with open(path, "rb") as f:
    msgs = [line.rstrip(b"\n").split(b" ", 1) for line in f]
import os
os.unlink(path)  # the file was only the hand-over from the bench process
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop_start()
for topic, payload in msgs:
    c.publish(topic.decode(), payload, qos=0)
time.sleep(0.5)
c.disconnect()
c.loop_stop()
"""


def publish_file(port: int, lines: list[tuple[str, bytes]]) -> subprocess.Popen[bytes]:
    """Publish (topic, payload) pairs as fast as possible from another process."""
    with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".msgs") as f:
        for topic, payload in lines:
            assert b"\n" not in payload
            f.write(topic.encode() + b" " + payload + b"\n")
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(port), f.name])
