"""Loa on RabbitMQ 3.10's MQTT plugin clustered on three nodes (docs/scaling.md, "A
clustered broker"). First what the engine gives for what Loa relies on, measured so the table
there can be reproduced: QoS 1, Wills and a mirrored session hold across the nodes and a
node's loss; retained messages do not (they stay on the node they were published on, and a
wildcard filter gets none). Then Loa on it, with the controller's retained messages sent
through every node (``LOA_MQTT_RETAINED_EVERY_NODE``): the boards on other nodes than the
controller's play a bulletin and an emergency, and a bulletin survives the loss of the
boards' node, every play recorded."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devices import topics
from devices.areas import load_fixture
from tests.integration.harness import ControllerProcess, HttpApi, make_settings, seed, sim_process
from tests.integration.test_faults import (
    CLUSTERS,
    COMMUNE,
    ENV,
    LEAD_S,
    TEXT,
    Station,
    _fail_over,
    _kill_after,
    _Nodes,
)
from tests.utils.broker import Watcher, wait_for
from tests.utils.proxy import FirstUp
from tests.utils.rabbitmq import RabbitCluster, needs_rabbitmq

pytestmark = [pytest.mark.integration, needs_rabbitmq]

#: a board with a Will that says when it is connected, then waits to be killed
BOARD = """
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cluster-c9")
c.will_set("loa/v1/cluster/c9/status", b"offline", qos=1)
c.on_connect = lambda *_: print("connected", flush=True)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
"""


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbitmq")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Session:
    """An MQTT 3.1.1 client with a session that outlives its connection (as the controller
    holds one): what it got, and whether the broker said its session was present."""

    def __init__(self, port: int, client_id: str, topic: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got: list[bytes] = []
        self.present: list[bool] = []
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False)

        def connected(_c: Any, _u: Any, flags: Any, _rc: Any, _p: Any) -> None:
            self.present.append(bool(flags.session_present))
            self.client.subscribe(topic, qos=1)  # (as the controller does after every connect)

        self.client.on_connect = connected
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda _c, _u, m: self.got.append(m.payload)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise AssertionError("no SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.on_connect = self.client.on_message = self.client.on_subscribe = None


def test_qos1_and_wills_cross_the_nodes_retained_messages_do_not(rabbit: RabbitCluster) -> None:
    p = rabbit.mqtt_ports
    events = Watcher(p[1], "loa/v1/cluster/+/event")
    sender = Watcher(p[0], "unused/0")
    sender.publish("loa/v1/cluster/c1/event", b"played")
    wait_for(lambda: events.got == [b"played"], 5, "a QoS 1 message from another node")

    # a board's Will, published by the node it was on, reaches a subscriber on another:
    # the board's process is killed (its link lost, no DISCONNECT)
    statuses = Watcher(p[0], "loa/v1/cluster/+/status")
    board = subprocess.Popen([sys.executable, "-c", BOARD, str(p[2])], stdout=subprocess.PIPE)
    try:
        assert board.stdout is not None and board.stdout.readline() == b"connected\n"
    finally:
        board.kill()
        board.communicate(timeout=5)
    wait_for(lambda: b"offline" in statuses.got, 10, "the Will on another node")

    # retained: kept by the node it was published on only, and never to a wildcard filter
    sender.publish("loa/v1/controller/status", b"online", retain=True)
    same = Watcher(p[0], "loa/v1/controller/status")
    wait_for(lambda: same.got == [b"online"], 5, "the retained copy on its own node")
    other = Watcher(p[1], "loa/v1/controller/status")
    births = Watcher(p[0], "loa/v1/controller/+")
    assert not wait_for_none(lambda: other.got or births.got, 2)
    for w in (events, sender, statuses, same, other, births):
        w.close()


def wait_for_none(what: Any, seconds: float) -> Any:
    """What ``what`` returns after ``seconds`` (for a message that must not come)."""
    try:
        return wait_for(what, seconds, "nothing")
    except AssertionError:
        return None


def test_a_node_lost_keeps_the_mirrored_session_and_the_boards_move(
        rabbit: RabbitCluster) -> None:
    p = rabbit.mqtt_ports
    controller = Session(p[2], "loa-controller-test", "loa/v1/cluster/+/event")
    controller.close()  # away: what the clusters report is queued for it
    sender = Watcher(p[0], "unused/1")
    for i in range(3):
        sender.publish(f"loa/v1/cluster/c{i}/event", b"ev%d" % i)
    board = Watcher(p[2], "loa/v1/area/hd/cmd")
    rabbit.kill(2)  # the node the controller's session and the board were on
    back = Session(p[1], "loa-controller-test", "loa/v1/cluster/+/event")
    assert back.present == [True]
    wait_for(lambda: sorted(back.got) == [b"ev0", b"ev1", b"ev2"], 10,
             "what was queued for the controller, from the mirror")
    moved = Watcher(p[1], "loa/v1/area/hd/cmd")  # the board on another node, subscribed again
    sender.publish("loa/v1/area/hd/cmd", b"play")
    wait_for(lambda: moved.got == [b"play"], 5, "a command to the board that moved")
    for w in (sender, moved, board):
        w.close()
    back.close()


@dataclass
class _Url:
    url: str  # (what make_settings reads)


@contextmanager
def loa_on_rabbitmq(tmp: Path, db_url: str | None = None, standby: bool = False
                    ) -> Iterator[tuple[Station, RabbitCluster, ControllerProcess | None]]:
    """Three RabbitMQ nodes; the controller on node 1 (knowing all three, its retained
    messages through every node), with ``standby`` a second one waiting on the same
    database behind one address; the 15 boards, each with its broker account, knowing nodes
    0 and 2 and sitting on node 0: every command, chunk, report, Will and retained status
    crosses between nodes."""
    nodes = RabbitCluster(tmp / "rabbitmq").start()
    ctl = second = st = proxy = None
    try:
        net = load_fixture("huong-dao")
        nodes.add_users(list(net.clusters), "board-secret")
        port = nodes.mqtt_ports
        settings = make_settings(
            tmp / "data", _Url(""), db_url,  # type: ignore[arg-type]
            mqtt_url=",".join(f"mqtt://127.0.0.1:{port[i]}" for i in (1, 0, 2)),
            mqtt_protocol="3.1.1", mqtt_retained_every_node=True)
        seed(settings, net)
        env = {**ENV, "LOA_MQTT_PROTOCOL": "3.1.1", "LOA_MQTT_RETAINED_EVERY_NODE": "true"}
        ctl = ControllerProcess(settings, env, log=tmp / "controller.log").start()
        api = HttpApi(ctl.base)
        if standby:
            second = ControllerProcess(settings, env, log=tmp / "second.log",
                                       standby=True).start()
            proxy = FirstUp([ctl.port, second.port])
            api = HttpApi(proxy.base)
            wait_for(lambda: "standby" in second.log.read_text(), 30, "the second one waiting")
        st = Station(tmp, None, ctl, api.login(), tmp / "played")  # type: ignore[arg-type]
        boards = ",".join(f"mqtt://board:board-secret@127.0.0.1:{port[i]}" for i in (0, 2))
        st.sim = sim_process(_Nodes(boards), settings.data_dir / "controller_ed25519.pub",  # type: ignore[arg-type]
                             2, "--fixture", "huong-dao", "--record-dir", str(st.played),
                             "--mqtt-protocol", "3.1.1", log=tmp / "sim.log")
        wait_for(lambda: st is not None and st.online() == CLUSTERS, 60, "15 clusters online")
        assert nodes.users_on(0) >= set(net.clusters)  # the boards on node 0
        status, content = st.api.post("/api/v1/contents/tts", {"text": TEXT})
        assert status == 201, content
        st.content_id = content["id"]
        yield st, nodes, second
    finally:
        if st is not None:
            st.stop_sim()
        if proxy is not None:
            proxy.close()
        for c in (second, ctl):
            if c is not None:
                c.stop()
        nodes.stop()


def _emergency(st: Station) -> str:
    status, bc = st.api.post("/api/v1/broadcasts", {
        "content_id": st.content_id, "priority": "emergency", "targets": {"areas": [COMMUNE]}})
    assert status == 201, bc
    return str(bc["id"])


@pytest.mark.parametrize("moment", ["bulletin", "emergency", "node-lost", "controllers-node-lost"])
@pytest.mark.timeout(400)
def test_loa_on_a_rabbitmq_cluster(tmp_path: Path, moment: str) -> None:
    """A bulletin and an emergency (its audio as retained chunks) play everywhere and are
    recorded. With ``node-lost`` node 0 is killed 1 s into the bulletin: the boards move to
    node 2, find the controller's status there, play and report. With
    ``controllers-node-lost`` node 1 is: the controller moves to node 0 and takes up its
    mirrored session there, with the reports queued in it meanwhile."""
    with loa_on_rabbitmq(tmp_path) as (st, nodes, _none):
        if moment == "emergency":
            st.check(_emergency(st), timeout=120)
            return
        bid, start = st.schedule(LEAD_S + 4)
        if moment in ("node-lost", "controllers-node-lost"):
            _kill_after(st, start + timedelta(seconds=1))
            nodes.kill(0 if moment == "node-lost" else 1)
        st.check(bid, timeout=240)
        if moment == "node-lost":  # they moved to node 2 and played and reported from there
            assert nodes.users_on(2) >= {f"hd-c{i:02d}" for i in range(1, CLUSTERS + 1)}
        if moment == "controllers-node-lost":  # the controller's link moved to node 0
            assert st.ctl.settings.client_id in {cid for cid, _user in nodes.clients_on(0)}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("moment", ["before-dispatch", "emergency-fan-out"])
@pytest.mark.timeout(400)
def test_the_standby_takes_over_on_a_rabbitmq_cluster(tmp_path: Path, db_url: str,
                                                       moment: str) -> None:
    """Two controllers on one PostgreSQL behind one address, three broker nodes: the active
    one is killed (kill -9) 1 s before it would send a scheduled bulletin, or while an
    emergency's clusters fetch its audio. The standby takes over, and every cluster plays
    once, as the API, answering through the other replica, records."""
    with loa_on_rabbitmq(tmp_path, db_url, standby=True) as (st, nodes, second):
        assert second is not None
        if moment == "before-dispatch":
            bid, start = st.schedule(LEAD_S + 8)
            _kill_after(st, start - timedelta(seconds=LEAD_S + 1))
        else:
            commands = Watcher(nodes.mqtt_ports[0], topics.area_cmd(COMMUNE))
            try:
                bid = _emergency(st)
                wait_for(lambda: commands.got, 15, "the emergency's play on the broker")
            finally:
                commands.close()
        assert _fail_over(st, second) < 10
        st.check(bid, timeout=120)
