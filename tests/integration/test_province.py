"""The province pushes down: jurisdiction, emergency preemption with resume, quiet hours."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key

from controller.db.models import Alert, Area, Cluster, utcnow
from devices.areas import Network, load_fixture
from tests.capsig import make_issuer, sign_xml
from tests.integration.harness import SimThread, make_settings, running_controller, seed
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
PROVINCE, COMMUNE, OTHER = "vn-vp", "vn-vp-tamduong-huongdao", "vn-vp-tamduong-kimlong"
VN = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass
class Province:
    admin: TestClient
    province: TestClient
    commune: TestClient  # the commune's leader
    tech: TestClient
    sim: SimThread
    net: Network
    officer: TestClient  # the commune's officer: its bulletins wait for the leader


def login(app: object, user: str, password: str) -> TestClient:
    c = TestClient(app)  # type: ignore[arg-type]
    r = c.post("/api/v1/auth/token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return c


@pytest.fixture(scope="module")
def prov(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Province]:
    tmp = tmp_path_factory.mktemp("province")
    net = load_fixture("huong-dao")
    settings = make_settings(tmp, broker)
    seed(settings, net)
    with running_controller(settings) as admin:
        rt = admin.app.state.runtime  # type: ignore[attr-defined]
        with rt.sessions() as db:  # a neighbouring commune (no clusters needed)
            db.add(Area(id=OTHER, name="Kim Long", kind="commune", parent_id="vn-vp-tamduong"))
            db.commit()
        for user, role, area in [("tinh.vp", "officer", PROVINCE), ("xa.huongdao", "leader", COMMUNE),
                                 ("kt.huongdao", "technician", COMMUNE),
                                 ("vt.huongdao", "officer", COMMUNE)]:
            r = admin.post("/api/v1/users", json={"username": user, "password": "secret-pass",
                                                  "role": role, "area_id": area})
            assert r.status_code == 201, r.text
        # the province lets its officers send emergencies (by default only leaders may)
        r = admin.put(f"/api/v1/areas/{PROVINCE}/policy",
                      json={"officers_send_emergencies": True})
        assert r.status_code == 200, r.text
        sim = SimThread(net, SimConfig(port=broker.port, heartbeat_s=2, keys=[
            load_verify_key(tmp / "controller_ed25519.pub")])).start()
        wait_for(lambda: all(c["state"] == "online" for c in admin.get("/api/v1/clusters").json()),
                 20, "online")
        yield Province(admin, login(admin.app, "tinh.vp", "secret-pass"),
                       login(admin.app, "xa.huongdao", "secret-pass"),
                       login(admin.app, "kt.huongdao", "secret-pass"), sim, net,
                       login(admin.app, "vt.huongdao", "secret-pass"))
        sim.stop()


def tts(api: TestClient, text: str) -> str:
    r = api.post("/api/v1/contents/tts", json={"text": text})
    assert r.status_code == 201, r.text
    return r.json()["id"]  # type: ignore[no-any-return]


def test_a_commune_officer_acts_only_in_its_commune(prov: Province) -> None:
    c = tts(prov.commune, "Thông báo của xã.")
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [OTHER]}, "start_at": later})
    assert r.status_code == 403 and "outside that area" in r.json()["message"]
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [PROVINCE]}, "start_at": later})
    assert r.status_code == 403
    own = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": later})
    assert own.status_code == 201, own.text
    assert prov.commune.post(f"/api/v1/broadcasts/{own.json()['id']}/cancel").status_code == 200
    r = prov.tech.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": later})
    assert r.status_code == 403 and "technician" in r.json()["message"]
    r = prov.commune.post("/api/v1/users", json={"username": "x.y.z", "password": "secret-pass",
                                                 "role": "officer", "area_id": COMMUNE})
    assert r.status_code == 403


def test_nobody_reads_or_acknowledges_outside_their_area(prov: Province) -> None:
    rt = prov.admin.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as db:  # a cluster of the neighbouring commune, with an open alert
        db.add(Cluster(id="kl-c01", name="Kim Long 1", area_id=OTHER, state="offline",
                       state_since=utcnow()))
        alert = Alert(cluster_id="kl-c01", area_id=OTHER, code="offline",
                      message="kl-c01 offline", opened_at=utcnow(), last_seen_at=utcnow())
        db.add(alert)
        db.commit()
        alert_id = alert.id
    action = prov.admin.post("/api/v1/clusters/kl-c01/actions", json={"kind": "report_now"})
    assert action.status_code == 202, action.text
    tech = prov.tech
    # the neighbour's cluster, its telemetry, its action and its alert do not exist for us
    assert tech.get("/api/v1/clusters/kl-c01").status_code == 404
    assert tech.get("/api/v1/clusters/kl-c01/telemetry").status_code == 404
    assert tech.get(f"/api/v1/actions/{action.json()['id']}").status_code == 404
    r = tech.post(f"/api/v1/alerts/{alert_id}/ack")
    assert r.status_code == 404, r.text
    assert tech.get(f"/api/v1/reports/availability?area_id={OTHER}").status_code == 404
    # a commune account's availability report is of its own commune
    rep = tech.get("/api/v1/reports/availability").json()
    assert rep["area_id"] == COMMUNE
    seen = {c["cluster_id"] for p in rep["periods"] for c in p["clusters"]}
    assert seen == set(prov.net.clusters)
    assert all(a["id"] != alert_id for a in tech.get("/api/v1/alerts").json())
    # a province bulletin's readiness, read by the commune: its own clusters only
    content = tts(prov.admin, "Thông báo của tỉnh.")
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    bc = prov.admin.post("/api/v1/broadcasts", json={
        "content_id": content, "targets": {"areas": [PROVINCE]}, "start_at": later})
    assert bc.status_code == 201, bc.text
    everyone = {c["cluster_id"] for c in prov.admin.get(
        f"/api/v1/broadcasts/{bc.json()['id']}/readiness").json()["clusters"]}
    assert "kl-c01" in everyone
    ours = tech.get(f"/api/v1/broadcasts/{bc.json()['id']}/readiness")
    assert ours.status_code == 200, ours.text
    assert {c["cluster_id"] for c in ours.json()["clusters"]} == set(prov.net.clusters)
    assert prov.admin.post(f"/api/v1/broadcasts/{bc.json()['id']}/cancel").status_code == 200
    # an id no database can hold is a clear 422, not a server error
    r = tech.post(f"/api/v1/alerts/{2 ** 70}/ack")
    assert r.status_code == 422, r.text
    # the admin (national) can acknowledge it
    assert prov.admin.post(f"/api/v1/alerts/{alert_id}/ack").json()["acknowledged_by"] == "admin"
    with rt.sessions() as db:  # leave the province as it was for the tests that follow
        db.delete(db.get(Alert, alert_id))
        db.delete(db.get(Cluster, "kl-c01"))
        db.commit()


def test_province_emergency_preempts_local_programme_which_then_resumes(prov: Province) -> None:
    local = tts(prov.commune, "Chương trình phát thanh của xã hôm nay. " * 4)
    start = datetime.now(UTC) + timedelta(seconds=2)
    lb = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": local, "targets": {"areas": [COMMUNE]}, "start_at": start.isoformat()}).json()
    wait_for(lambda: all(d["state"] == "playing" for d in
                         prov.commune.get(f"/api/v1/broadcasts/{lb['id']}").json()["deliveries"])
             and prov.commune.get(f"/api/v1/broadcasts/{lb['id']}").json()["deliveries"], 15,
             "local programme playing")
    time.sleep(1.0)
    warning = tts(prov.province, "Cảnh báo bão khẩn cấp. Người dân không ra khỏi nhà.")
    t0 = datetime.now(UTC)
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": warning, "targets": {"areas": [PROVINCE]}, "priority": "emergency",
        "title": "Cảnh báo bão"})
    assert r.status_code == 201, r.text
    eb = r.json()

    def emergency_playing() -> list | None:  # type: ignore[type-arg]
        ds = prov.province.get(f"/api/v1/broadcasts/{eb['id']}").json()["deliveries"]
        return ds if ds and all(d["started_at"] for d in ds) else None

    ds = wait_for(emergency_playing, 10, "every cluster playing the emergency")
    worst = max(datetime.fromisoformat(d["started_at"]) for d in ds) - t0
    print(f"\nemergency: last cluster started {worst.total_seconds():.2f} s after the API call")
    assert len(ds) == 15 and worst <= timedelta(seconds=2)
    # the commune sees the province bulletin and cannot cancel it
    assert any(b["id"] == eb["id"] for b in prov.commune.get("/api/v1/broadcasts").json())
    r = prov.commune.post(f"/api/v1/broadcasts/{eb['id']}/cancel")
    assert r.status_code == 403 and "cannot cancel" in r.json()["message"]
    # the list counts every broadcast's latest airing (the emergency: 15 deliveries)
    listed = {b["id"]: b for b in prov.province.get("/api/v1/broadcasts").json()}
    assert sum(listed[eb["id"]]["occurrence"]["summary"].values()) == 15
    assert listed[eb["id"]]["deliveries"] == []  # (the list carries no per-cluster rows)
    # the local programme was preempted, resumes where it stopped, and finishes
    mid = prov.commune.get(f"/api/v1/broadcasts/{lb['id']}").json()["deliveries"]
    assert {d["state"] for d in mid} <= {"preempted", "playing"}
    assert any(d["state"] == "preempted" and "emergency" in (d["error"] or "") for d in mid)
    final = wait_for(lambda: (b := prov.commune.get(f"/api/v1/broadcasts/{lb['id']}").json())
                     and all(d["state"] == "played" for d in b["deliveries"]) and b, 60,
                     "local programme finished after resuming")
    content = prov.commune.get(f"/api/v1/contents/{local}").json()
    emerg = prov.province.get(f"/api/v1/contents/{warning}").json()
    for d in final["deliveries"]:
        span = (datetime.fromisoformat(d["finished_at"]) - datetime.fromisoformat(d["started_at"]))
        # resumed, not restarted: its own length plus the emergency's, not more
        assert span.total_seconds() < content["duration_s"] + emerg["duration_s"] + 2.0
    for c in prov.sim.clusters:
        occ = c.player.occurrences[final["occurrence"]["id"]]
        assert occ.position_ms > 0  # it did resume from a position, not from zero


def test_quiet_hours_refuse_a_normal_bulletin_at_0430_but_not_an_emergency(prov: Province) -> None:
    r = prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy",
                       json={"quiet_hours": [{"start": "21:30", "end": "05:00"}]})
    assert r.status_code == 200, r.text
    try:
        c = tts(prov.commune, "Nhạc buổi sáng.")
        local_now = datetime.now(VN)
        at = local_now.replace(hour=4, minute=30, second=0, microsecond=0)
        if at <= local_now:
            at += timedelta(days=1)
        r = prov.commune.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": at.isoformat()})
        assert r.status_code == 422
        assert "quiet hours 21:30–05:00" in r.json()["message"] and "04:30" in r.json()["message"]
        r = prov.province.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": at.isoformat(),
            "priority": "emergency"})
        assert r.status_code == 201, r.text
        prov.province.post(f"/api/v1/broadcasts/{r.json()['id']}/cancel")
    finally:
        prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy", json={"quiet_hours": []})


CAP_ALERT = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{ident}</identifier>
  <sender>pccc@vinhphuc.gov.vn</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>{refs}
  <info>
    <language>vi-VN</language>
    <category>Met</category>
    <event>Bão</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <expires>{expires}</expires>
    <headline>{headline}</headline>
    <description>Bão số 3 đổ bộ trong hai giờ tới.</description>
    <instruction>Người dân ở trong nhà, tránh xa sông suối.</instruction>
    <area><areaDesc>Xã Hướng Đạo</areaDesc></area>
  </info>
</alert>"""


def cap(prov: Province, ident: str, msg_type: str = "Alert", status: str = "Actual",
        refs: str = "", headline: str = "Cảnh báo bão số 3",
        expires: datetime | None = None, signer: tuple[bytes, bytes] | None = None,
        tamper: bool = False, severity: str = "Extreme") -> tuple[int, dict]:  # type: ignore[type-arg]
    now = datetime.now(VN).replace(microsecond=0)
    xml = CAP_ALERT.format(
        ident=ident, sent=now.isoformat(), status=status, msg_type=msg_type, headline=headline,
        expires=(expires or now + timedelta(hours=3)).isoformat(),
        refs=f"\n  <references>{refs}</references>" if refs else "").encode()
    xml = xml.replace(b"<severity>Extreme</severity>", f"<severity>{severity}</severity>".encode())
    if signer is not None:
        xml = sign_xml(xml, *signer)
    if tamper:
        xml = xml.replace(b"<severity>Extreme</severity>", b"<severity>Minor</severity>")
    r = prov.province.post("/api/v1/cap", content=xml,
                           headers={"Content-Type": "application/xml"})
    return r.status_code, r.json()


def occ_states(prov: Province, bid: str) -> set[str]:
    b = prov.province.get(f"/api/v1/broadcasts/{bid}").json()
    occ = b["occurrence"]["id"] if b["occurrence"] else None
    return {c.player.occurrences[occ].state.value if occ in c.player.occurrences else "-"
            for c in prov.sim.clusters}


def test_cap_alert_airs_update_replaces_and_cancel_stops_everywhere(prov: Province) -> None:
    status, first = cap(prov, "VP-2026-0001")
    assert status == 201, first
    assert first["priority"] == "emergency" and first["rollup"][0]["targeted"] == 15
    assert "<msgType>Ack</msgType>" in first["ack"] and "VP-2026-0001" in first["ack"]
    wait_for(lambda: "playing" in occ_states(prov, first["broadcast_id"]), 10, "alert playing")
    status, upd = cap(prov, "VP-2026-0002", "Update", headline="Cập nhật: bão số 3 mạnh lên",
                      refs="pccc@vinhphuc.gov.vn,VP-2026-0001,2026-01-01T00:00:00+07:00")
    assert status == 201, upd
    assert upd["replaced"] == [first["broadcast_id"]]
    wait_for(lambda: occ_states(prov, first["broadcast_id"]) == {"cancelled"}, 10,
             "the replaced alert stopped everywhere")
    wait_for(lambda: "playing" in occ_states(prov, upd["broadcast_id"]), 10, "update playing")
    status, cancel = cap(prov, "VP-2026-0003", "Cancel",
                         refs="pccc@vinhphuc.gov.vn,VP-2026-0002,2026-01-01T00:00:00+07:00")
    assert status == 200, cancel
    t0 = time.monotonic()
    wait_for(lambda: occ_states(prov, upd["broadcast_id"]) <= {"cancelled", "played"}, 10,
             "cancel stopping playback everywhere")
    print(f"\nCAP Cancel stopped playback on every cluster in {time.monotonic() - t0:.2f} s")
    report = prov.province.get(f"/api/v1/broadcasts/{upd['broadcast_id']}/report",
                               params={"format": "csv"})
    assert report.status_code == 200 and report.text.startswith("area_id,name,targeted")
    assert "vn-vp-tamduong-huongdao,Hướng Đạo,15" in report.text


def test_a_cap_emergency_airs_its_headline_at_once_and_the_rest_after_it_everywhere(
        prov: Province) -> None:
    """What every cluster played, against what the API records: the headline part, then
    the rest, each once, in that order, on all 15 clusters."""
    t0 = time.monotonic()
    status, body = cap(prov, "VP-2026-0201", headline="Lũ quét")
    assert status == 201, body
    bid = body["broadcast_id"]

    def held() -> list[list[Any]]:
        return [[o for o in c.player.occurrences.values() if o.body.broadcast_id == bid]
                for c in prov.sim.clusters]

    wait_for(lambda: all(any(o.state.value == "playing" for o in x) for x in held()), 10,
             "the headline playing everywhere")
    print(f"\nCAP emergency: POST -> all 15 clusters playing in {time.monotonic() - t0:.2f} s")
    wait_for(lambda: all(len(x) == 2 and all(o.state.value == "played" for o in x)
                         for x in held()), 60, "both parts played everywhere")
    def recorded() -> dict[str, Any] | None:
        b = prov.province.get(f"/api/v1/broadcasts/{bid}").json()
        return b if b["status"] == "completed" else None  # type: ignore[no-any-return]

    b = wait_for(recorded, 30, "the record complete")
    assert [o["status"] for o in b["occurrences"]] == ["completed", "completed"]
    assert [o["summary"] for o in b["occurrences"]] == [{"played": 15}, {"played": 15}]
    rt = prov.admin.app.state.runtime  # type: ignore[attr-defined]
    head, rest = (o["id"] for o in b["occurrences"])
    from controller.db.models import Delivery

    with rt.sessions() as db:
        rows = {(d.occurrence_id, d.cluster_id): d for d in db.query(Delivery).filter(
            Delivery.occurrence_id.in_([head, rest]))}
    for c in prov.sim.clusters:
        first, second = rows[(head, c.id)], rows[(rest, c.id)]
        assert first.finished_at is not None and second.started_at is not None
        assert first.finished_at <= second.started_at, c.id  # after it, never over it


def test_cap_cancel_and_update_follow_a_priority_alert_to_every_commune_copy(
        prov: Province) -> None:
    """A priority alert becomes a copy in each commune's programme: its Update replaces that
    copy and its Cancel stops it, and the Ack says what was stopped where."""
    sender = "pccc@vinhphuc.gov.vn"
    status, first = cap(prov, "VP-2026-0101", severity="Moderate")
    assert status == 201, first
    assert first["priority"] == "priority"

    def copy_of(bid: str) -> dict:  # type: ignore[type-arg]
        kids = prov.province.get(f"/api/v1/broadcasts/{bid}").json()["children"]
        assert [k["commune_id"] for k in kids] == [COMMUNE], kids
        return kids[0]  # type: ignore[no-any-return]

    old = copy_of(first["broadcast_id"])
    assert old["status"] in ("scheduled", "active")
    status, upd = cap(prov, "VP-2026-0102", "Update", severity="Moderate",
                      refs=f"{sender},VP-2026-0101,2026-01-01T00:00:00+07:00")
    assert status == 201, upd
    assert [(s["broadcast_id"], s["commune_id"], s["stopped"]) for s in upd["stopped"]] == [
        (old["broadcast_id"], COMMUNE, True)]
    assert "Hướng Đạo" in upd["ack"] and "replaces" in upd["ack"]
    assert copy_of(first["broadcast_id"])["status"] == "cancelled"
    new = copy_of(upd["broadcast_id"])
    assert new["status"] in ("scheduled", "active")
    status, cancel = cap(prov, "VP-2026-0103", "Cancel",
                         refs=f"{sender},VP-2026-0102,2026-01-01T00:00:00+07:00")
    assert status == 200, cancel
    assert [(s["broadcast_id"], s["stopped"]) for s in cancel["stopped"]] == [
        (new["broadcast_id"], True)]
    assert copy_of(upd["broadcast_id"])["status"] == "cancelled"
    # and neither airs anywhere: once their start has passed, every cluster that got them
    # holds them cancelled
    b = prov.commune.get(f"/api/v1/broadcasts/{new['broadcast_id']}").json()
    if b["occurrence"]:
        start = datetime.fromisoformat(b["occurrence"]["start_at"])
        wait_for(lambda: datetime.now(UTC) > start + timedelta(seconds=2), 60,
                 "the copy's start to pass")
    for kid in (old["broadcast_id"], new["broadcast_id"]):
        assert occ_states(prov, kid) <= {"cancelled", "-"}, (kid, occ_states(prov, kid))


def test_a_signed_cap_alert_is_verified_against_the_trusted_issuers(
        prov: Province, tmp_path: Path) -> None:
    key, cert = make_issuer("Đài Khí tượng Thủy văn Vĩnh Phúc")
    pem = tmp_path / "kttv.pem"
    pem.write_bytes(cert)
    settings = prov.admin.app.state.runtime.settings  # type: ignore[attr-defined]
    before = len(prov.province.get("/api/v1/broadcasts").json())
    settings.cap_trusted_certs = [pem]
    try:
        status, body = cap(prov, "kttv-signed-1", status="Test", signer=(key, cert))
        assert status == 202, body
        assert body["signature"].startswith("verified: signed by")
        # one changed element after signing: refused, with the reason
        status, body = cap(prov, "kttv-signed-2", signer=(key, cert), tamper=True)
        assert status == 422 and "signature refused" in body["message"]
        # signed by an issuer nobody trusts
        status, body = cap(prov, "kttv-signed-3", signer=make_issuer("mạo danh"))
        assert status == 422 and "does not verify" in body["message"]
        # an operator may require signatures: unsigned alerts are then refused
        settings.cap_require_signature = True
        status, body = cap(prov, "kttv-unsigned")
        assert status == 422 and "only CAP alerts signed" in body["message"]
    finally:
        settings.cap_trusted_certs, settings.cap_require_signature = [], False
    assert len(prov.province.get("/api/v1/broadcasts").json()) == before  # nothing aired


def test_bad_cap_is_refused_with_a_clear_error_and_nothing_plays(prov: Province) -> None:
    before = len(prov.admin.get("/api/v1/broadcasts", params={"limit": 500}).json())
    spec = Path(__file__).parents[1] / "fixtures" / "cap" / "a2-severe-thunderstorm.xml"
    cases = {
        "malformed": (b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>",
                      "malformed"),
        "bomb": ((b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                 b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                 b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&b;</alert>'), "unsafe"),
        "namespace": (spec.read_bytes().replace(b"cap:1.2", b"cap:1.1"), "namespace"),
        "expired (the spec's own example)": (spec.read_bytes(), "expired"),
    }
    for name, (body, words) in cases.items():
        r = prov.province.post("/api/v1/cap", content=body,
                               headers={"Content-Type": "application/xml"})
        assert r.status_code == 422 and words in r.json()["message"], (name, r.text)
    status, body = cap(prov, "VP-T-1", status="Test")
    assert status == 202 and body["aired"] is False
    status, body = cap(prov, "VP-X-1", expires=datetime.now(VN) - timedelta(minutes=1))
    assert status == 422 and "expired" in body["message"]
    assert len(prov.admin.get("/api/v1/broadcasts", params={"limit": 500}).json()) == before


# --- bulletins handed down: the commune inbox, the programme, updates, volume caps --------

def get(api: TestClient, path: str) -> Any:
    r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def played(api: TestClient, bid: str, n: int, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (b := get(api, f"/api/v1/broadcasts/{bid}"))
                    and len(b["deliveries"]) == n
                    and all(d["state"] == "played" for d in b["deliveries"]) and b,
                    timeout, f"broadcast {bid} played on {n} clusters")


def test_normal_bulletin_from_the_province_lands_in_the_inbox_and_the_commune_decides(
        prov: Province) -> None:
    c = tts(prov.province, "Thông báo của tỉnh về lịch tiêm chủng.")
    soon = datetime.now(UTC) + timedelta(minutes=30)
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [PROVINCE]}, "start_at": soon.isoformat(),
        "title": "Lịch tiêm chủng"})
    assert r.status_code == 201, r.text
    parent = r.json()
    assert parent["status"] == "distributed" and parent["occurrence"] is None
    # one copy per commune with clusters (Kim Long has none), waiting in its inbox
    assert [(k["commune_id"], k["status"]) for k in parent["children"]] == [(COMMUNE, "inbox")]
    inbox = get(prov.commune, "/api/v1/inbox")
    item = next(i for i in inbox if i["parent_id"] == parent["id"])
    assert item["from"] == "province Vĩnh Phúc" and item["suggested_start_at"]
    # nothing airs until the commune decides; it may pick villages and its own time
    r = prov.commune.post(f"/api/v1/inbox/{item['id']}/accept",
                          json={"areas": ["vn-vp"]})
    assert r.status_code == 422 and "villages of commune" in r.json()["message"]
    start = datetime.now(UTC) + timedelta(seconds=3)
    r = prov.commune.post(f"/api/v1/inbox/{item['id']}/accept",
                          json={"areas": ["hd-v02"], "start_at": start.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "scheduled" and r.json()["decided_by"] == "xa.huongdao"
    r = prov.commune.post(f"/api/v1/inbox/{item['id']}/decline", json={"reason": "trùng lịch"})
    assert r.status_code == 409  # decided once
    played(prov.commune, item["id"], 1)
    # the province sees per commune what was decided and what played
    report = get(prov.province, f"/api/v1/broadcasts/{parent['id']}/report")
    row = next(x for x in report["communes"] if x["area_id"] == COMMUNE)
    assert row["decided_by"] == "xa.huongdao" and row["played"] == 1

    # a second one, declined with a reason the province reads in its report (and CSV)
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": soon.isoformat()})
    second = r.json()
    kid = second["children"][0]["broadcast_id"]
    r = prov.commune.post(f"/api/v1/inbox/{kid}/decline", json={"reason": "đã phát tuần trước"})
    assert r.status_code == 200 and r.json()["status"] == "declined"
    report = get(prov.province, f"/api/v1/broadcasts/{second['id']}/report")
    assert report["communes"][0]["decision"] == "declined"
    assert report["communes"][0]["note"] == "đã phát tuần trước"
    csv = prov.province.get(f"/api/v1/broadcasts/{second['id']}/report?format=csv").text
    assert "declined" in csv and "đã phát tuần trước" in csv
    assert not any(i["id"] == kid for i in get(prov.commune, "/api/v1/inbox"))


def test_priority_bulletin_goes_ahead_of_local_items_and_the_commune_reorders(
        prov: Province) -> None:
    village = "hd-v03"  # one cluster, hd-c04
    local = tts(prov.commune, "Thông báo họp thôn.")
    mine = tts(prov.commune, "Thông báo khẩn của xã về nước sạch.")
    pushed = tts(prov.province, "Bản tin ưu tiên của tỉnh.")
    slot = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": local, "targets": {"areas": [village]}, "start_at": slot.isoformat(),
        "title": "Họp thôn"})
    assert r.status_code == 201, r.text
    lb = r.json()
    # the province previews first: it sees the local item and how it will move
    ask = {"content_id": pushed, "targets": {"areas": [village]}, "start_at": slot.isoformat(),
           "priority": "priority", "title": "Bản tin tỉnh"}
    pv = prov.province.post("/api/v1/broadcasts/preview", json=ask)
    assert pv.status_code == 200, pv.text
    row = pv.json()["communes"][0]
    assert row["area_id"] == COMMUNE and pv.json()["refused"] is None
    hit = next(x for x in row["collisions"] if x["broadcast_id"] == lb["id"])
    assert "moves from" in hit["resolution"] and "after the new item" in hit["resolution"]
    assert row["delay_s"] == 0
    r = prov.province.post("/api/v1/broadcasts", json=ask)
    assert r.status_code == 201, r.text
    pb = r.json()
    child = pb["children"][0]
    # on the commune's programme at once, not in its inbox (dispatched already, if its
    # slot is within the dispatch lead)
    assert child["status"] in ("scheduled", "active")
    # the commune cannot drop it ...
    r = prov.commune.post(f"/api/v1/broadcasts/{child['broadcast_id']}/cancel")
    assert r.status_code == 403
    # ... but adds its own priority item and puts it first among priority items
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": mine, "targets": {"areas": [village]}, "start_at": slot.isoformat(),
        "priority": "priority", "title": "Nước sạch"})
    mb = r.json()
    r = prov.commune.post(f"/api/v1/broadcasts/{mb['id']}/position", json={"position": 0})
    assert r.status_code == 200, r.text
    r = prov.commune.post(f"/api/v1/broadcasts/{child['broadcast_id']}/position",
                          json={"position": 1})
    assert r.status_code == 200, r.text
    day = slot.astimezone(VN).date().isoformat()
    prog = get(prov.commune, f"/api/v1/programme?area={village}&day={day}")
    order = [i["broadcast_id"] for i in prog["items"] if i["slot"] and
             datetime.fromisoformat(i["slot"]) == slot]
    assert order == [mb["id"], child["broadcast_id"], lb["id"]], prog
    # and that is what airs: back to back, in that order, on the cluster
    finals = [played(prov.commune, b, 1, 60) for b in (mb["id"], child["broadcast_id"], lb["id"])]
    starts = [datetime.fromisoformat(f["deliveries"][0]["started_at"]) for f in finals]
    ends = [datetime.fromisoformat(f["deliveries"][0]["finished_at"]) for f in finals]
    assert abs((starts[0] - slot).total_seconds()) < 0.5
    for k in (1, 2):  # each starts after the one before it ended, with the gap
        gap = (starts[k] - ends[k - 1]).total_seconds()
        assert 1.5 <= gap <= 3.0, (k, gap)
    # the province report counts its copy in the commune, and shows it per cluster
    report = get(prov.province, f"/api/v1/broadcasts/{pb['id']}/report")
    assert report["communes"][0]["played"] == 1
    parent = get(prov.province, f"/api/v1/broadcasts/{pb['id']}")
    assert [(d["cluster_id"], d["state"]) for d in parent["deliveries"]] == [("hd-c04", "played")]


def test_priority_without_a_time_goes_into_the_next_programme_slot(prov: Province) -> None:
    at = (datetime.now(VN) + timedelta(minutes=10)).replace(second=0, microsecond=0)
    r = prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy", json={"programme": [
        {"at": at.strftime("%H:%M"), "days": [0, 1, 2, 3, 4, 5, 6]}]})
    assert r.status_code == 200, r.text
    try:
        c = tts(prov.province, "Bản tin ưu tiên.")
        r = prov.province.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": [COMMUNE]}, "priority": "priority"})
        assert r.status_code == 201, r.text
        kid = r.json()["children"][0]
        assert datetime.fromisoformat(kid["start_at"]) == at
        # cancelling the parent cancels the commune's copy
        r = prov.province.post(f"/api/v1/broadcasts/{r.json()['id']}/cancel")
        assert r.status_code == 200 and r.json()["children"][0]["status"] == "cancelled"
        # a commune account schedules directly and must still give a time
        r = prov.commune.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": [COMMUNE]}, "priority": "priority"})
        assert r.status_code == 422 and "give start_at" in r.json()["message"]
    finally:
        prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy", json={"programme": None})


def test_update_replaces_the_content_where_it_has_not_played(prov: Province) -> None:
    village = "hd-v04"
    old = tts(prov.commune, "Lịch họp cũ: thứ hai.")
    new = tts(prov.commune, "Lịch họp mới: thứ ba, tám giờ sáng.")
    new_sha = get(prov.commune, f"/api/v1/contents/{new}")["sha256"]
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": old, "targets": {"areas": [village]},
        "start_at": (datetime.now(UTC) + timedelta(seconds=6)).isoformat()})
    bid = r.json()["id"]
    # sent to the cluster (dispatch lead) and already cached there as "ready"
    wait_for(lambda: get(prov.commune, f"/api/v1/broadcasts/{bid}")["deliveries"]
             and get(prov.commune, f"/api/v1/broadcasts/{bid}")["deliveries"][0]["state"]
             == "ready", 5, "ready on the cluster")
    r = prov.commune.post(f"/api/v1/broadcasts/{bid}/update", json={"content_id": new})
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 1
    final = played(prov.commune, bid, 1)
    cid = final["deliveries"][0]["cluster_id"]
    occ = prov.sim.by_id(cid).player.occurrences[final["occurrence"]["id"]]
    assert occ.body.content.sha256 == new_sha and occ.body.revision == 1
    assert final["deliveries"][0]["revision"] == 1  # the controller's proof of what aired
    r = prov.commune.post(f"/api/v1/broadcasts/{bid}/update", json={"content_id": old})
    assert r.status_code == 409  # it has played: nothing left to replace
    # another commune's officer may not update a province bulletin
    c = tts(prov.province, "Bản tin tỉnh.")
    pb = prov.province.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "priority": "emergency",
        "start_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}).json()
    r = prov.commune.post(f"/api/v1/broadcasts/{pb['id']}/update", json={"content_id": new})
    assert r.status_code == 403
    prov.province.post(f"/api/v1/broadcasts/{pb['id']}/cancel")


@contextmanager
def capped_at_40(prov: Province) -> Iterator[None]:
    """The commune's volume capped at 40 % for the hour either side of now."""
    now = datetime.now(VN)
    window = {"start": (now - timedelta(hours=1)).strftime("%H:%M"),
              "end": (now + timedelta(hours=1)).strftime("%H:%M"), "max_pct": 40}
    r = prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy", json={"volume_caps": [window]})
    assert r.status_code == 200, r.text
    try:
        yield
    finally:
        prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy", json={"volume_caps": None})


def test_volume_cap_by_time_of_day(prov: Province) -> None:
    with capped_at_40(prov):
        c = tts(prov.commune, "Thông báo nhỏ.")
        start = datetime.now(UTC) + timedelta(seconds=3)
        r = prov.commune.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": ["hd-v05"]}, "start_at": start.isoformat(),
            "volume_pct": 80})
        assert r.status_code == 422 and "volume 80% is above the 40% cap" in r.json()["message"]
        r = prov.commune.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": ["hd-v05"]}, "start_at": start.isoformat()})
        assert r.status_code == 201, r.text
        final = played(prov.commune, r.json()["id"], 1)
        sim = prov.sim.by_id(final["deliveries"][0]["cluster_id"])
        occ = sim.player.occurrences[final["occurrence"]["id"]]
        assert sim.volume_pct > 40 and sim.playback_volume(occ) == 40  # capped on the cluster


def test_a_capped_play_sent_again_to_a_cluster_that_was_away_keeps_its_cap(
        prov: Province) -> None:
    """The cluster is off the air when the bulletin is sent; once back it is sent the play
    on its own topic, and that copy carries the area's cap too."""
    with capped_at_40(prov):
        board = next(c for c in prov.sim.clusters if "hd-v05" in c.area_path)
        prov.sim.call(lambda: board.inject("link_cut", {"down_s": 4.0}))
        wait_for(lambda: get(prov.admin, f"/api/v1/clusters/{board.id}")["state"] == "offline",
                 10, "the cluster away")
        c = tts(prov.commune, "Thông báo nhỏ.")
        r = prov.commune.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": ["hd-v05"]},
            "start_at": (datetime.now(UTC) + timedelta(seconds=12)).isoformat()})
        assert r.status_code == 201, r.text
        final = played(prov.commune, r.json()["id"], 1, timeout=40)
        occ = board.player.occurrences[final["occurrence"]["id"]]
        assert board.volume_pct > 40 and board.playback_volume(occ) == 40


def test_an_officers_bulletin_airs_only_once_a_leader_approves_it(prov: Province) -> None:
    c = tts(prov.officer, "Thông báo lịch tiêm phòng cho trẻ em.")
    start = datetime.now(UTC) + timedelta(seconds=6)
    r = prov.officer.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": ["hd-v06"]}, "start_at": start.isoformat(),
        "title": "Tiêm phòng"})
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["status"] == "pending_approval" and b["next_slots"] == [] and b["occurrence"] is None
    r = prov.officer.post(f"/api/v1/broadcasts/{b['id']}/approve")
    assert r.status_code == 403 and "only admin, leader may approve" in r.json()["message"]
    r = prov.commune.post(f"/api/v1/broadcasts/{b['id']}/approve")  # the leader
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "scheduled" and r.json()["approved_by"] == "xa.huongdao"
    # after approval the officer cannot swap the content behind the leader's back
    other = tts(prov.officer, "Nội dung chưa được duyệt.")
    r = prov.officer.post(f"/api/v1/broadcasts/{b['id']}/update", json={"content_id": other})
    assert r.status_code == 403 and "approved this bulletin" in r.json()["message"]
    final = played(prov.commune, b["id"], 1)
    assert final["deliveries"][0]["cluster_id"] == "hd-c07"
    sha = get(prov.officer, f"/api/v1/contents/{c}")["sha256"]
    occ = prov.sim.by_id("hd-c07").player.occurrences[final["occurrence"]["id"]]
    assert occ.body.content.sha256 == sha  # what the leader approved is what played

    # rejected with a reason: it never airs
    r = prov.officer.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": ["hd-v06"]},
        "start_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
    rid = r.json()["id"]
    r = prov.commune.post(f"/api/v1/broadcasts/{rid}/reject", json={"reason": "sai ngày tiêm"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert r.json()["decision_note"] == "sai ngày tiêm"
    assert prov.commune.post(f"/api/v1/broadcasts/{rid}/approve").status_code == 409

    # not approved before its start: it expires, and nothing played
    r = prov.officer.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": ["hd-v06"]},
        "start_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat()})
    late = r.json()["id"]
    b = wait_for(lambda: (x := get(prov.officer, f"/api/v1/broadcasts/{late}"))["status"]
                 == "expired" and x, 10, "unapproved bulletin expired")
    assert b["occurrence"] is None and b["decision_note"] == "not approved before its start"
    assert prov.commune.post(f"/api/v1/broadcasts/{late}/approve").status_code == 409

    # one waiting near its slot is flagged to the commune before it is missed
    r = prov.officer.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": ["hd-v06"]}, "title": "Họp dân",
        "start_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat()})
    soon = r.json()["id"]

    def risk() -> list[dict[str, Any]]:
        return [a for a in get(prov.commune, "/api/v1/alerts?status=open&code=slot_at_risk")
                if soon in (a.get("subject") or "") or "Họp dân" in a["message"]]

    [alert] = wait_for(risk, 25, "a slot-at-risk alert for the unapproved bulletin")
    assert "is not approved yet" in alert["message"] and "vt.huongdao" in alert["message"]
    prov.commune.post(f"/api/v1/broadcasts/{soon}/reject", json={"reason": "không cần"})
    wait_for(lambda: not risk(), 25, "the alert cleared once it was decided")

    # an officer may not send an emergency (it airs at once, unapproved, at full volume)
    # unless the commune's policy grants it; then it does not wait for a leader
    # (the province grants its own officers the right, and its communes inherit it)
    emergency = {"content_id": c, "targets": {"areas": ["hd-v06"]}, "priority": "emergency",
                 "start_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}
    try:
        r = prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy",
                           json={"officers_send_emergencies": False})
        assert r.status_code == 200, r.text
        r = prov.officer.post("/api/v1/broadcasts", json=emergency)
        assert r.status_code == 403 and r.json()["code"] == "emergency_not_allowed", r.text
        r = prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy",
                           json={"officers_send_emergencies": True})
        assert r.status_code == 200, r.text
        r = prov.officer.post("/api/v1/broadcasts", json=emergency)
        assert r.status_code == 201 and r.json()["status"] == "scheduled"
        prov.officer.post(f"/api/v1/broadcasts/{r.json()['id']}/cancel")
    finally:
        prov.admin.put(f"/api/v1/areas/{COMMUNE}/policy", json={})


def test_an_approval_holds_only_for_the_content_the_leader_heard(prov: Province) -> None:
    heard = tts(prov.officer, "Thông báo họp dân lúc 8 giờ.")
    r = prov.officer.post("/api/v1/broadcasts", json={
        "content_id": heard, "targets": {"areas": ["hd-v05"]}, "title": "Họp dân",
        "start_at": (datetime.now(UTC) + timedelta(hours=3)).isoformat()})
    assert r.status_code == 201 and r.json()["status"] == "pending_approval", r.text
    bid = r.json()["id"]
    # while the leader listens, the officer swaps the audio
    swapped = tts(prov.officer, "Nội dung khác hẳn.")
    r = prov.officer.post(f"/api/v1/broadcasts/{bid}/update", json={"content_id": swapped})
    assert r.status_code == 200, r.text
    r = prov.commune.post(f"/api/v1/broadcasts/{bid}/approve", json={"content_id": heard})
    assert r.status_code == 409 and r.json()["code"] == "approval_stale"
    assert get(prov.commune, f"/api/v1/broadcasts/{bid}")["status"] == "pending_approval"
    r = prov.commune.post(f"/api/v1/broadcasts/{bid}/approve", json={"content_id": swapped})
    assert r.status_code == 200 and r.json()["status"] == "scheduled", r.text
    # once approved, the officer cannot change it behind the leader's back
    r = prov.officer.post(f"/api/v1/broadcasts/{bid}/update", json={"content_id": heard})
    assert r.status_code == 403 and r.json()["code"] == "approved_content_locked"
    prov.commune.post(f"/api/v1/broadcasts/{bid}/cancel")


def test_a_commune_cannot_change_what_the_province_sent_down(prov: Province) -> None:
    c = tts(prov.province, "Thông báo của tỉnh về phòng chống dịch.")
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "priority": "normal"})
    assert r.status_code == 201, r.text
    [copy] = get(prov.province, f"/api/v1/broadcasts/{r.json()['id']}")["children"]
    own = tts(prov.commune, "Nội dung của xã thay vào.")
    r = prov.commune.post(f"/api/v1/broadcasts/{copy['broadcast_id']}/update",
                         json={"content_id": own})
    assert r.status_code == 403 and r.json()["code"] == "content_from_above", r.text
    # declining it stays the commune's right
    r = prov.commune.post(f"/api/v1/inbox/{copy['broadcast_id']}/decline",
                          json={"reason": "đã thông báo"})
    assert r.status_code == 200, r.text


def test_an_item_set_to_restart_starts_over_after_an_emergency(prov: Province) -> None:
    village, cluster = "hd-v08", "hd-c09"
    local = tts(prov.commune, "Thông báo phải nghe trọn vẹn từ đầu đến cuối. " * 4)
    warning = tts(prov.province, "Khẩn cấp.")
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": local, "targets": {"areas": [village]}, "after_preempt": "restart",
        "start_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat()})
    assert r.status_code == 201 and r.json()["after_preempt"] == "restart", r.text
    lb = r.json()
    wait_for(lambda: [d["state"] for d in get(prov.commune, f"/api/v1/broadcasts/{lb['id']}")
                      ["deliveries"]] == ["playing"], 15, "local item playing")
    time.sleep(1.5)  # part of it has played
    eb = prov.province.post("/api/v1/broadcasts", json={
        "content_id": warning, "targets": {"areas": [village]}, "priority": "emergency"}).json()
    played(prov.province, eb["id"], 1)
    final = played(prov.commune, lb["id"], 1, 60)
    occ = prov.sim.by_id(cluster).player.occurrences[final["occurrence"]["id"]]
    assert occ.position_ms == 0  # started over, not resumed
    d = final["deliveries"][0]
    span = (datetime.fromisoformat(d["finished_at"])
            - datetime.fromisoformat(d["started_at"])).total_seconds()
    own = get(prov.commune, f"/api/v1/contents/{local}")["duration_s"]
    emerg = get(prov.province, f"/api/v1/contents/{warning}")["duration_s"]
    assert span >= own + emerg + 1.2  # the 1.5 s heard before the emergency, heard again


def test_reports_sent_before_an_emergency_is_recorded_are_kept(
        prov: Province, monkeypatch: pytest.MonkeyPatch) -> None:
    """An immediate emergency's command goes on the wire before its rows are written. Here
    the writing is held up until every cluster has started playing and reported it: those
    early reports must still land on their deliveries, none dropped as unknown."""
    rt = prov.admin.app.state.runtime  # type: ignore[attr-defined]
    content = rt.dispatcher.content
    push_to_areas = content.push_to_areas
    early: list[set[str]] = []

    def slow_push(sha: str, areas: tuple[str, ...]) -> int:
        n = push_to_areas(sha, areas)
        # (between publishing and writing the rows) wait until every cluster plays it
        deadline, playing = time.monotonic() + 10, set()
        while time.monotonic() < deadline and len(playing) < len(prov.sim.clusters):
            playing |= {c.id for c in prov.sim.clusters
                        if c.player.current is not None and c.player.current.body.priority
                        .value == "emergency"}
            time.sleep(0.01)
        time.sleep(0.3)  # and their reports are in the controller's inbox
        early.append(playing)
        return n

    monkeypatch.setattr(content, "push_to_areas", slow_push)
    unknown = rt.dispatcher.counters["delivery_unknown"]
    warning = tts(prov.province, "Cảnh báo lũ quét.")
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": warning, "targets": {"areas": [PROVINCE]}, "priority": "emergency"})
    assert r.status_code == 201, r.text
    assert early and len(early[0]) == 15  # all of them played before the rows existed
    ds = wait_for(lambda: (d := get(prov.province, f"/api/v1/broadcasts/{r.json()['id']}")
                           ["deliveries"]) and all(x["started_at"] for x in d) and d, 10,
                  "every early report recorded")
    assert len(ds) == 15 and {d["state"] for d in ds} <= {"playing", "played"}
    assert rt.dispatcher.counters["delivery_unknown"] == unknown
    played(prov.province, r.json()["id"], 15)


def test_an_emergency_on_the_air_is_recorded_even_if_the_first_write_fails(
        prov: Province, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command is out before the rows are written; a write that fails once (a lock
    held too long) is tried again, and the clusters' reports still find their rows."""
    import sqlalchemy.exc

    import controller.broadcasting.dispatcher as dispatcher_module

    real_insert = dispatcher_module.insert
    calls: list[int] = []

    def flaky_insert(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("INSERT INTO deliveries", {},
                                                  Exception("database is locked"))
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "insert", flaky_insert)
    warning = tts(prov.province, "Cảnh báo giông lốc.")
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": warning, "targets": {"areas": ["hd-v03"]}, "priority": "emergency"})
    assert r.status_code == 201, r.text
    assert len(calls) == 2
    n = len([c for c in prov.net.clusters.values() if c.area_id == "hd-v03"])
    final = played(prov.province, r.json()["id"], n)
    assert all(d["started_at"] for d in final["deliveries"])


def test_another_communes_content_and_settings_are_not_readable(prov: Province) -> None:
    """Kim Long's recording, audio, policy and thresholds do not exist for Hướng Đạo."""
    r = prov.admin.post("/api/v1/users", json={"username": "canbo.kimlong",
                                               "password": "Kim-Long-2026!",
                                               "role": "officer", "area_id": OTHER})
    assert r.status_code in (201, 409), r.text
    kimlong = login(prov.admin.app, "canbo.kimlong", "Kim-Long-2026!")
    theirs = tts(kimlong, "Thông báo riêng của xã Kim Long.")
    for path in (f"/api/v1/contents/{theirs}", f"/api/v1/contents/{theirs}/audio",
                 f"/api/v1/areas/{OTHER}/policy", f"/api/v1/areas/{OTHER}/thresholds"):
        assert prov.commune.get(path).status_code == 404, path
    # nor can it be scheduled or swapped in by its id
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": theirs, "targets": {"areas": [COMMUNE]},
        "start_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()})
    assert r.status_code == 422 and r.json()["code"] == "content_unknown"
    # while the province's own policy (which applies to the commune) and the province's
    # content handed down to it are readable
    assert prov.commune.get(f"/api/v1/areas/{PROVINCE}/policy").status_code == 200
    assert kimlong.get(f"/api/v1/contents/{theirs}").status_code == 200
    down = tts(prov.province, "Thông báo của tỉnh gửi các xã.")
    assert prov.commune.get(f"/api/v1/contents/{down}").status_code == 404  # not sent yet
    r = prov.province.post("/api/v1/broadcasts", json={
        "content_id": down, "targets": {"areas": [COMMUNE]}, "priority": "normal"})
    assert r.status_code == 201, r.text
    assert prov.commune.get(f"/api/v1/contents/{down}").status_code == 200
