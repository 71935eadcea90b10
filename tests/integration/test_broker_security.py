"""A broker that enforces who is who, configured from the controller's registry: every board
connects with its own credential from its provisioning bundle; nobody else connects; a
board publishes only as itself and reads only what is meant for it; a revoked or replaced
credential is refused. Real Mosquitto, the controller's own files, the simulator."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from firmware_sim.cluster import SimConfig
from nacl.signing import VerifyKey
from paho.mqtt.enums import CallbackAPIVersion

from controller.access.broker_auth import CONTROLLER_USER, OBSERVER_USER
from devices import topics
from devices.areas import load_fixture
from devices.provisioning import ProvisioningBundle
from tests.integration.harness import (
    SimThread,
    issue_bundles,
    make_settings,
    running_controller,
    seed,
)
from tests.utils.broker import Broker, free_port, needs_mosquitto, wait_for
from tests.utils.commune import new_account

pytestmark = [pytest.mark.integration, needs_mosquitto]

COMMUNE = "vn-vp-tamduong-huongdao"
CONTROLLER_SECRET = "controller-secret-for-the-tests-0123"
OBSERVER_SECRET = "observer-secret-for-the-tests-4567"


@dataclass
class Secured:
    kind: str
    admin: TestClient
    broker: Broker
    bundles: dict[str, ProvisioningBundle]
    sim: SimThread


class Client:
    """A bare MQTT client (paho, 3.1.1) with a username and password, as anyone could run."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None,
                 client_id: str | None = None):
        self.got: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.refused: Any = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"probe-{uuid.uuid4().hex[:12]}",
                             reconnect_on_failure=False)  # a refusal is its answer
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc == 0:
            self.connected.set()
        else:
            self.refused = rc

    def wait(self) -> bool:
        """True once connected, False once refused."""
        wait_for(lambda: self.connected.is_set() or self.refused is not None, 10,
                 "the broker's answer to CONNECT")
        return self.connected.is_set()

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *_a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture(scope="module", params=["mosquitto", "amqtt"])
def secured(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """The same registry enforced by Mosquitto (its password and ACL files, re-read on
    SIGHUP) and by the embedded broker of ``loa demo`` (amqtt behind the door that reads the
    same files)."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"secured-{kind}")
    net = load_fixture("huong-dao")
    port = free_port()
    files = tmp / "broker"
    probe = Broker(tmp, port=port)  # (only its URL, for the settings)
    settings = make_settings(tmp, probe, broker_files_dir=files,
                             broker_pid_file=tmp / "broker.pid" if kind == "mosquitto" else None,
                             mqtt_protocol="auto" if kind == "mosquitto" else "3.1.1",
                             broker_observer_password=OBSERVER_SECRET,
                             mqtt_url=f"mqtt://{CONTROLLER_USER}:{CONTROLLER_SECRET}"
                                      f"@127.0.0.1:{port}")
    seed(settings, net)  # (and the broker's files, before the broker starts)
    if kind == "amqtt":
        broker = Broker(tmp, port=port, embedded=True, files_dir=files).start()
    else:
        broker = Broker(tmp, port=port, anonymous=False, extra_conf=(
            f"password_file {files / 'passwd'}\nacl_file {files / 'acl'}\n"
            # (as root, Mosquitto would become "mosquitto", which may not read the
            # controller's 0600 files)
            "use_username_as_clientid true\nuser root\n")).start()
        assert broker.proc is not None
        (tmp / "broker.pid").write_text(str(broker.proc.pid))
    try:
        with running_controller(settings) as admin:
            bundles = issue_bundles(admin, net.clusters)
            key = VerifyKey(bytes.fromhex(bundles["hd-c01"].controller_public_key))
            sim = SimThread(net, SimConfig(port=port, heartbeat_s=2, keys=[key], passwords={
                cid: b.password for cid, b in bundles.items()},
                protocol="auto" if kind == "mosquitto" else "3.1.1")).start()
            wait_for(lambda: all(c["state"] == "online"
                                 for c in admin.get("/api/v1/clusters").json()), 30,
                     "every provisioned board online")
            yield Secured(kind, admin, broker, bundles, sim)
            sim.stop()
    finally:
        broker.kill()


def test_the_bundle_gives_a_board_what_it_needs_and_nothing_more(secured: Secured) -> None:
    b = secured.bundles["hd-c03"]
    assert b.username == "hd-c03" and len(b.password) >= 32
    assert b.area_path == ["hd-v02", COMMUNE, "vn-vp-tamduong", "vn-vp"]
    assert b.broker_url == f"mqtt://127.0.0.1:{secured.broker.port}"  # no controller secret
    assert len({x.password for x in secured.bundles.values()}) == 15
    passwd = (Path(secured.admin.app.state.runtime.settings.broker_files_dir)  # type: ignore[attr-defined]
              / "passwd").read_text()
    assert b.password not in passwd and CONTROLLER_SECRET not in passwd  # hashes only


def test_provisioned_boards_play_a_bulletin(secured: Secured) -> None:
    c = secured.admin.post("/api/v1/contents/tts", json={"text": "Thử loa."}).json()["id"]
    r = secured.admin.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "priority": "emergency"})
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    wait_for(lambda: secured.admin.get(f"/api/v1/broadcasts/{bid}").json()["occurrence"][
        "summary"] == {"played": 15}, 30, "played on every board")


def test_nobody_connects_without_a_valid_credential(secured: Secured) -> None:
    port = secured.broker.port
    for who, user, password in [("anonymous", None, None),
                                ("a wrong password", "hd-c03", "not-its-password-at-all"),
                                ("the controller's name", CONTROLLER_USER, "guess"),
                                ("another board's password", "hd-c03",
                                 secured.bundles["hd-c04"].password)]:
        probe = Client(port, user, password)
        try:
            assert probe.wait() is False, who
        finally:
            probe.close()


def test_a_board_publishes_only_as_itself_and_reads_only_its_own(secured: Secured) -> None:
    """A spare board's credential in an attacker's hands (hd-c17, registered, no board
    running), against an independent observer that may read everything."""
    port, admin = secured.broker.port, secured.admin
    r = admin.post("/api/v1/clusters", json={"id": "hd-c17", "area_id": "hd-v02"})
    assert r.status_code in (201, 409), r.text
    stolen = admin.post("/api/v1/clusters/hd-c17/credentials").json()["password"]
    witness = Client(port, OBSERVER_USER, OBSERVER_SECRET)
    assert witness.wait()
    witness.subscribe("loa/#")
    listener = Client(port, "hd-c17", stolen)
    try:
        assert listener.wait()
        # asks for everything: it gets its own share of it, nothing more
        listener.subscribe("loa/#")
        listener.subscribe(topics.area_cmd(COMMUNE))  # its own share, asked for plainly
        listener.subscribe(topics.cluster_cmd("hd-c04"))  # another board's: never delivered
        # the controller sends to the commune (it may read) and to hd-c04 (it may not)
        c = admin.post("/api/v1/contents/tts", json={"text": "Thử."}).json()["id"]
        start = (datetime.now(UTC) + timedelta(seconds=20)).isoformat()
        r = admin.post("/api/v1/broadcasts", json={  # (sent at once: within the lead)
            "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": start})
        assert r.status_code == 201, r.text
        assert admin.post("/api/v1/clusters/hd-c04/actions",
                          json={"kind": "report_now"}).status_code == 202
        wait_for(lambda: any(t == topics.cluster_cmd("hd-c04") for t, _p in witness.got), 10,
                 "the observer hearing the command to hd-c04")
        wait_for(lambda: any(t == topics.area_cmd(COMMUNE) for t, _p in listener.got), 10,
                 "the stolen board hearing its commune's command")
        got = {t for t, _p in listener.got}
        assert topics.cluster_cmd("hd-c04") not in got
        assert all(t.startswith("loa/v1/cluster/hd-c17/") for t in got
                   if t.startswith("loa/v1/cluster/")), got  # no other board's status either
    finally:
        listener.close()
    forged = {"v": 1, "kind": "delivery", "cluster_id": "hd-c04", "seq": 99,
              "ts": "2026-12-07T00:00:00.000Z", "command_id": "x" * 32,
              "occurrence_id": "y" * 32, "state": "played",
              "at": "2026-12-07T00:00:00.000Z", "reason": None, "revision": 0}
    attempts = [(topics.cluster_event("hd-c04"), json.dumps(forged).encode(), False),
                (topics.cluster_status("hd-c04"),
                 b'{"v":1,"cluster_id":"hd-c04","state":"offline","bd_seq":1}', True),
                (topics.cluster_cmd("hd-c17"), b'{"v":1,"kind":"play","forged":1}', False),
                (topics.CONTROLLER_STATUS, b'{"v":1,"state":"online","forged":1}', True)]
    try:
        for topic, payload, retain in attempts:
            rogue = Client(port, "hd-c17", stolen)
            try:
                assert rogue.wait()
                rogue.c.publish(topic, payload, qos=0, retain=retain)
            finally:
                rogue.close()
        rogue = Client(port, "hd-c17", stolen)
        try:
            assert rogue.wait()
            rogue.publish(topics.cluster_event("hd-c17"), b'{"v":1,"kind":"noise"}')  # its own
        finally:
            rogue.close()
        wait_for(lambda: (topics.cluster_event("hd-c17"), b'{"v":1,"kind":"noise"}')
                 in witness.got, 10, "the board's own event (the broker lets it speak as itself)")
        heard = [p for _t, p in witness.got]
        for _topic, payload, _retain in attempts:
            assert payload not in heard, payload
        assert admin.get("/api/v1/clusters/hd-c04").json()["state"] == "online"
    finally:
        witness.close()


def test_a_revoked_or_replaced_credential_is_refused(secured: Secured) -> None:
    port = secured.broker.port
    old = secured.bundles["hd-c15"].password
    r = secured.admin.post("/api/v1/clusters/hd-c15/credentials")  # a replacement board
    assert r.status_code == 201, r.text
    new = r.json()["password"]

    def answer(password: str) -> bool:
        probe = Client(port, "hd-c15", password, client_id="hd-c15")
        try:
            return probe.wait()
        finally:
            probe.close()

    assert wait_for(lambda: not answer(old), 10, "the old credential refused")
    assert answer(new)
    assert secured.admin.delete("/api/v1/clusters/hd-c15/credentials").status_code == 204
    assert wait_for(lambda: not answer(new), 10, "the revoked credential refused")
    # an officer schedules bulletins; boards' credentials are not its to issue
    officer = new_account(secured.admin, "canbo.hd", "secret-pass-123", "officer", COMMUNE)
    r = officer.post("/api/v1/clusters/hd-c01/credentials")
    assert r.status_code == 403 and r.json()["code"] == "role_not_allowed"


def test_a_technician_registers_a_new_board_replaces_it_and_retires_it(
        secured: Secured) -> None:
    from devices.areas import Cluster, Network, Speaker

    admin, port = secured.admin, secured.broker.port
    tech = new_account(admin, "kythuat.hd", "Ky-thuat-2026", "technician", COMMUNE)
    # a new board in Thôn Đồng Bông, registered and given its bundle by the technician
    r = tech.post("/api/v1/clusters", json={
        "id": "hd-c16", "area_id": "hd-v01", "name": "Cụm Đồng Bông 3", "lat": 21.3398,
        "lon": 105.5611, "speakers": [{"index": 1, "name": "Loa chợ"},
                                      {"index": 2, "name": "Loa đình"}]})
    assert r.status_code == 201, r.text
    r = tech.post("/api/v1/clusters/hd-c16/credentials")
    assert r.status_code == 201, r.text
    first = ProvisioningBundle.model_validate(r.json())
    assert first.area_path[0] == "hd-v01"
    net = load_fixture("huong-dao")
    board = Network(net.name, net.areas, {"hd-c16": Cluster(
        "hd-c16", "hd-v01", "Cụm Đồng Bông 3",
        speakers=(Speaker(1, "Loa chợ"), Speaker(2, "Loa đình")))})
    sim = SimThread(board, SimConfig(port=port, heartbeat_s=2, keys=[
        VerifyKey(bytes.fromhex(first.controller_public_key))],
        passwords={"hd-c16": first.password},
        protocol="auto" if secured.kind == "mosquitto" else "3.1.1")).start()
    try:
        wait_for(lambda: tech.get("/api/v1/clusters/hd-c16").json()["state"] == "online", 20,
                 "the new board online")
        c = admin.post("/api/v1/contents/tts", json={"text": "Thử cụm mới."}).json()["id"]
        bid = admin.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": ["hd-v01"]},
            "priority": "emergency"}).json()["id"]

        def states() -> dict[str, str]:
            return {d["cluster_id"]: d["state"] for d in
                    admin.get(f"/api/v1/broadcasts/{bid}").json()["deliveries"]}

        wait_for(lambda: states() == {"hd-c01": "played", "hd-c02": "played",
                                      "hd-c16": "played"}, 30, "the new board playing")
    finally:
        sim.stop()

    def answer(password: str) -> bool:
        probe = Client(port, "hd-c16", password, client_id="hd-c16")
        try:
            return probe.wait()
        finally:
            probe.close()

    # the board fails; its replacement takes the same place with a new bundle
    r = tech.post("/api/v1/clusters/hd-c16/credentials")
    second = ProvisioningBundle.model_validate(r.json())
    assert wait_for(lambda: not answer(first.password), 10, "the failed board refused")
    assert answer(second.password)
    assert states()["hd-c16"] == "played"  # its history stays with the cluster
    # retired: refused by the broker, never targeted again, its history kept
    assert tech.delete("/api/v1/clusters/hd-c16").status_code == 204
    assert wait_for(lambda: not answer(second.password), 10, "the retired board refused")
    assert tech.get("/api/v1/clusters/hd-c16").json()["state"] == "retired"
    again = admin.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": ["hd-v01"]}, "priority": "emergency"}).json()
    assert {d["cluster_id"] for d in again["deliveries"]} == {"hd-c01", "hd-c02"}
    assert states()["hd-c16"] == "played"
