"""The province pushes down: jurisdiction, emergency preemption with resume, quiet hours."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
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
