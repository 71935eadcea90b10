"""The province pushes down: jurisdiction, emergency preemption with resume, quiet hours."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from controller.db.models import Area
from devices.areas import Network, load_fixture
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key
from tests.integration.harness import (
    Broker,
    SimThread,
    make_settings,
    running_controller,
    seed,
    wait_for,
)

pytestmark = pytest.mark.integration
PROVINCE, COMMUNE, OTHER = "vn-vp", "vn-vp-tamduong-huongdao", "vn-vp-tamduong-kimlong"
VN = ZoneInfo("Asia/Ho_Chi_Minh")


@dataclass
class Province:
    admin: TestClient
    province: TestClient
    commune: TestClient
    tech: TestClient
    sim: SimThread
    net: Network


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
        for user, role, area in [("tinh.vp", "officer", PROVINCE), ("xa.huongdao", "officer", COMMUNE),
                                 ("kt.huongdao", "technician", COMMUNE)]:
            r = admin.post("/api/v1/users", json={"username": user, "password": "secret-pass",
                                                  "role": role, "area_id": area})
            assert r.status_code == 201, r.text
        sim = SimThread(net, SimConfig(port=broker.port, heartbeat_s=2, keys=[
            load_verify_key(tmp / "controller_ed25519.pub")])).start()
        wait_for(lambda: all(c["state"] == "online" for c in admin.get("/api/v1/clusters").json()),
                 20, "online")
        yield Province(admin, login(admin.app, "tinh.vp", "secret-pass"),
                       login(admin.app, "xa.huongdao", "secret-pass"),
                       login(admin.app, "kt.huongdao", "secret-pass"), sim, net)
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
    assert r.status_code == 403 and "outside that area" in r.json()["detail"]
    r = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [PROVINCE]}, "start_at": later})
    assert r.status_code == 403
    own = prov.commune.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": later})
    assert own.status_code == 201, own.text
    assert prov.commune.post(f"/api/v1/broadcasts/{own.json()['id']}/cancel").status_code == 200
    r = prov.tech.post("/api/v1/broadcasts", json={
        "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": later})
    assert r.status_code == 403 and "technician" in r.json()["detail"]
    r = prov.commune.post("/api/v1/users", json={"username": "x.y.z", "password": "secret-pass",
                                                 "role": "officer", "area_id": COMMUNE})
    assert r.status_code == 403


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
    assert r.status_code == 403 and "cannot cancel" in r.json()["detail"]
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
        assert "quiet hours 21:30–05:00" in r.json()["detail"] and "04:30" in r.json()["detail"]
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
        expires: datetime | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    now = datetime.now(VN).replace(microsecond=0)
    xml = CAP_ALERT.format(
        ident=ident, sent=now.isoformat(), status=status, msg_type=msg_type, headline=headline,
        expires=(expires or now + timedelta(hours=3)).isoformat(),
        refs=f"\n  <references>{refs}</references>" if refs else "")
    r = prov.province.post("/api/v1/cap", content=xml.encode(),
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


def test_bad_cap_is_refused_with_a_clear_error_and_nothing_plays(prov: Province) -> None:
    before = len(prov.admin.get("/api/v1/broadcasts", params={"limit": 500}).json())
    spec = Path(__file__).parents[1] / "fixtures" / "cap" / "a2-severe-thunderstorm.xml"
    cases = {
        "malformed": (b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>",
                      "malformed"),
        "bomb": (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                 b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                 b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&b;</alert>', "unsafe"),
        "namespace": (spec.read_bytes().replace(b"cap:1.2", b"cap:1.1"), "namespace"),
        "expired (the spec's own example)": (spec.read_bytes(), "expired"),
    }
    for name, (body, words) in cases.items():
        r = prov.province.post("/api/v1/cap", content=body,
                               headers={"Content-Type": "application/xml"})
        assert r.status_code == 422 and words in r.json()["detail"], (name, r.text)
    status, body = cap(prov, "VP-T-1", status="Test")
    assert status == 202 and body["aired"] is False
    status, body = cap(prov, "VP-X-1", expires=datetime.now(VN) - timedelta(minutes=1))
    assert status == 422 and "expired" in body["detail"]
    assert len(prov.admin.get("/api/v1/broadcasts", params={"limit": 500}).json()) == before
