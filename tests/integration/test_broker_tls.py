"""The broker over TLS with a CA the operator made (``loa broker tls``): the controller and
every board connect with mqtts, checking the broker's certificate against that CA (the
boards have it from their bundles); a plain connection and one that trusts another CA fail.
Real Mosquitto, the simulator."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from firmware_sim.cluster import SimConfig
from nacl.signing import VerifyKey

from controller.access.broker_auth import CONTROLLER_USER
from controller.access.tls import make_broker_tls
from devices.areas import load_fixture
from tests.integration.harness import (
    SimThread,
    issue_bundles,
    make_settings,
    running_controller,
    seed,
)
from tests.utils.broker import Broker, free_port, needs_mosquitto, wait_for

pytestmark = [pytest.mark.integration, needs_mosquitto]

SECRET = "controller-secret-for-tls-0123456"


def _handshake(port: int, ctx: ssl.SSLContext) -> str:
    """'ok', or why the TLS handshake failed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                return "ok"
        except ssl.SSLError as exc:
            return exc.reason or str(exc)


def test_the_controller_and_the_boards_speak_to_the_broker_over_tls(tmp_path: Path) -> None:
    tls, files, port = tmp_path / "tls", tmp_path / "broker", free_port()
    make_broker_tls(tls, ["127.0.0.1"], port)
    # (a second CA, as someone standing in for the broker would have)
    make_broker_tls(tmp_path / "other", ["127.0.0.1"], port)
    net = load_fixture("huong-dao")
    settings = make_settings(tmp_path, Broker(tmp_path, port=port), broker_files_dir=files,
                             mqtt_url=f"mqtts://{CONTROLLER_USER}:{SECRET}@127.0.0.1:{port}",
                             mqtt_ca_file=tls / "ca.pem", broker_pid_file=tmp_path / "pid")
    seed(settings, net)  # (and the broker's files, before the broker starts)
    broker = Broker(tmp_path, port=port, anonymous=False, extra_conf=(
        f"cafile {tls / 'ca.pem'}\ncertfile {tls / 'server.pem'}\nkeyfile {tls / 'server.key'}\n"
        f"password_file {files / 'passwd'}\nacl_file {files / 'acl'}\n"
        "use_username_as_clientid true\nuser root\n")).start()
    assert broker.proc is not None
    (tmp_path / "pid").write_text(str(broker.proc.pid))
    try:
        assert _handshake(port, ssl.create_default_context(cafile=str(tls / "ca.pem"))) == "ok"
        other = ssl.create_default_context(cafile=str(tmp_path / "other" / "ca.pem"))
        assert _handshake(port, other) == "CERTIFICATE_VERIFY_FAILED"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # a bare CONNECT
            plain.settimeout(5)
            try:
                answer = plain.recv(4)
            except ConnectionResetError:
                answer = b""
            assert answer != b"\x20\x02\x00\x00"  # never a CONNACK over plain TCP
        with running_controller(settings) as admin:
            bundles = issue_bundles(admin, net.clusters)
            b = bundles["hd-c01"]
            assert b.broker_url == f"mqtts://127.0.0.1:{port}"
            assert b.ca_pem == (tls / "ca.pem").read_text()
            sim = SimThread(net, SimConfig(
                port=port, heartbeat_s=2, tls=ssl.create_default_context(cadata=b.ca_pem),
                keys=[VerifyKey(bytes.fromhex(b.controller_public_key))],
                passwords={cid: x.password for cid, x in bundles.items()})).start()
            try:
                wait_for(lambda: all(c["state"] == "online"
                                     for c in admin.get("/api/v1/clusters").json()), 30,
                         "every board online over TLS")
                c = admin.post("/api/v1/contents/tts", json={"text": "Thử."}).json()["id"]
                bid = admin.post("/api/v1/broadcasts", json={
                    "content_id": c, "targets": {"areas": ["vn-vp-tamduong-huongdao"]},
                    "priority": "emergency"}).json()["id"]
                wait_for(lambda: admin.get(f"/api/v1/broadcasts/{bid}").json()["occurrence"]
                         ["summary"] == {"played": 15}, 30, "played over TLS everywhere")
            finally:
                sim.stop()
    finally:
        broker.kill()
