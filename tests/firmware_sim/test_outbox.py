"""A simulated cluster's outbox: what it sends goes out in order, each message once, whether
queued in a burst or one at a time, and what was queued while the link was down goes out
after it comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from firmware_sim.cluster import SimConfig

from devices import topics
from devices.areas import generate
from devices.messages import ControllerStatus, dumps, now_utc
from tests.integration.harness import SimThread
from tests.utils.broker import Broker, Watcher, wait_for

pytestmark = pytest.mark.integration


def test_sent_messages_arrive_in_order_before_and_after_a_lost_link(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    net = generate(1, 1)
    cid = next(iter(net.clusters))
    sim = SimThread(net, SimConfig(port=broker.port, heartbeat_s=3600,
                                   reconnect_min_s=0.1, reconnect_max_s=0.5)).start()
    watcher = Watcher(broker.port, topics.cluster_event(cid) + "/test")
    got = watcher.got
    # a board publishes events only while the controller's retained status says online
    watcher.publish(topics.CONTROLLER_STATUS, dumps(ControllerStatus(
        v=1, state="online", ts=now_utc())), retain=True)
    try:
        board = sim.by_id(cid)
        wait_for(board.connected.is_set, 10, "the cluster online")
        topic = topics.cluster_event(cid) + "/test"

        def burst(tag: str, n: int) -> None:
            # one call on the simulator's loop: all queued before the outbox task runs
            for i in range(n):
                board._send(topic, f"{tag}-{i}".encode())

        sim.call(lambda: burst("a", 30))
        for i in range(10):  # one at a time, each alone in the outbox
            wait_for(lambda: not board._outbox, 5, "the outbox drained")
            sim.call(lambda i=i: board._send(topic, f"b-{i}".encode()))
        wait_for(lambda: len(got) == 40, 10, "every message at the watcher")
        # the link goes (a power cut: the broker hands out its Will at once), and what is
        # queued meanwhile goes out once the cluster is back
        sim.call(lambda: board.inject("power_cut", {"battery": False}))
        wait_for(lambda: not board.connected.is_set(), 10, "the cluster to notice")
        sim.call(lambda: burst("c", 5))
        sim.call(lambda: board.clear("power_cut"))
        wait_for(lambda: len(got) >= 45, 20, "the queued messages after the reconnect")
        wait_for(lambda: not board._outbox, 5, "the outbox drained")
        assert got == ([f"a-{i}".encode() for i in range(30)]
                       + [f"b-{i}".encode() for i in range(10)]
                       + [f"c-{i}".encode() for i in range(5)])
    finally:
        watcher.close()
        sim.stop()
        broker.kill()


def test_events_wait_for_the_controller_and_survive_a_reboot(tmp_path: Path) -> None:
    """While the controller's status says offline, a board keeps its events; a board
    restarted with the same state folder still has them, and sends them, in order, once
    the controller is online."""
    broker = Broker(tmp_path).start()
    net = generate(1, 1)
    cid = next(iter(net.clusters))
    topic = topics.cluster_event(cid) + "/test"
    watcher = Watcher(broker.port, topic)
    got = watcher.got

    def status(state: str) -> None:
        watcher.publish(topics.CONTROLLER_STATUS, dumps(ControllerStatus(
            v=1, state=state, ts=now_utc() if state == "online" else None)), retain=True)

    cfg = SimConfig(port=broker.port, heartbeat_s=3600, reconnect_min_s=0.1,
                    reconnect_max_s=0.5, state_dir=tmp_path / "state")
    try:
        status("offline")
        sim = SimThread(net, cfg).start()
        board = sim.by_id(cid)
        wait_for(board.connected.is_set, 10, "the cluster online")
        sim.call(lambda: [board._send(topic, f"e-{i}".encode()) for i in range(5)])
        sim.stop()  # the board reboots with its events still queued
        journal = tmp_path / "state" / cid / "outbox.jsonl"
        assert journal.exists()
        assert got == []
        sim = SimThread(net, cfg).start()
        board = sim.by_id(cid)
        assert len(board._outbox) == 5
        wait_for(board.connected.is_set, 10, "the rebooted cluster online")
        status("online")
        wait_for(lambda: len(got) == 5, 10, "the kept events at the watcher")
        wait_for(lambda: not board._outbox, 5, "the outbox drained")
        assert got == [f"e-{i}".encode() for i in range(5)]
        sim.stop()
        # and a third boot has nothing left to send
        sim = SimThread(net, cfg).start()
        assert len(sim.by_id(cid)._outbox) == 0
        sim.stop()
    finally:
        watcher.close()
        broker.kill()
