"""xã Hướng Đạo end to end: a real broker, the controller, 15 simulated clusters."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from controller.db.models import Broadcast, Content, ContentBlob
from devices.areas import Network, load_fixture
from devices.messages import RefusalReason
from tests.integration.harness import SimThread, make_settings, running_controller, seed
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
COMMUNE = "vn-vp-tamduong-huongdao"


@dataclass
class Commune:
    api: TestClient
    sim: SimThread
    net: Network
    record_dir: Path
    broker: Broker


@pytest.fixture(scope="module")
def commune(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Commune]:
    tmp = tmp_path_factory.mktemp("commune")
    net = load_fixture("huong-dao")
    settings = make_settings(tmp, broker, max_upload_mb=2)
    seed(settings, net)
    with running_controller(settings) as api:
        cfg = SimConfig(port=broker.port, heartbeat_s=2,
                        keys=[load_verify_key(tmp / "controller_ed25519.pub")],
                        record_dir=tmp / "played")
        sim = SimThread(net, cfg).start()
        wait_for(lambda: all(c["state"] == "online" for c in api.get("/api/v1/clusters").json()),
                 20, "15 clusters online")
        yield Commune(api, sim, net, tmp / "played", broker)
        sim.stop()


def tts(api: TestClient, text: str) -> dict:  # type: ignore[type-arg]
    r = api.post("/api/v1/contents/tts", json={"text": text})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def schedule(api: TestClient, content_id: str, targets: dict, in_s: float) -> dict:  # type: ignore[type-arg]
    start = datetime.now(UTC) + timedelta(seconds=in_s)
    r = api.post("/api/v1/broadcasts", json={"content_id": content_id, "targets": targets,
                                            "start_at": start.isoformat()})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_final(api: TestClient, bid: str, timeout: float = 40) -> dict:  # type: ignore[type-arg]
    def done() -> dict | None:  # type: ignore[type-arg]
        b = api.get(f"/api/v1/broadcasts/{bid}").json()
        finals = {"played", "failed", "missed", "cancelled"}
        if b["deliveries"] and all(d["state"] in finals for d in b["deliveries"]):
            return b  # type: ignore[no-any-return]
        return None

    return wait_for(done, timeout, f"final delivery states of {bid}", every=0.2)  # type: ignore[no-any-return]


def played_files(record_dir: Path, occurrence_id: str) -> dict[str, Path]:
    return {p.parent.name: p for p in record_dir.glob(f"*/{occurrence_id}.ogg")}


def test_whole_commune_plays_together_with_proof(commune: Commune) -> None:
    content = tts(commune.api, "Ủy ban nhân dân xã Hướng Đạo thông báo lịch tiêm chủng "
                               "sáng thứ bảy tại trạm y tế xã.")
    b = schedule(commune.api, content["id"], {"areas": [COMMUNE]}, in_s=6)

    def village_report() -> list[dict[str, Any]]:
        return commune.api.get(  # type: ignore[no-any-return]
            f"/api/v1/broadcasts/{b['id']}/report?by=village").json()["villages"]

    # while it plays, the officer already sees it playing in every village, since when
    during = wait_for(lambda: (v := village_report()) and sum(x["playing"] for x in v) == 15
                      and v, 15, "all 15 clusters playing in the report")
    assert all(x["first_started_at"] and x["played"] == 0 and x["last_finished_at"] is None
               for x in during), during
    final = wait_final(commune.api, b["id"])
    deliveries = final["deliveries"]
    assert len(deliveries) == 15
    assert {d["state"] for d in deliveries} == {"played"}, deliveries
    starts = [datetime.fromisoformat(d["started_at"]) for d in deliveries]
    requested = datetime.fromisoformat(final["occurrence"]["start_at"])
    spread_ms = (max(starts) - min(starts)).total_seconds() * 1000
    print(f"\nstart spread across 15 clusters: {spread_ms:.1f} ms")
    assert spread_ms <= 50
    assert all(abs((s - requested).total_seconds()) < 0.1 for s in starts)
    for d in deliveries:  # played for the content's real duration
        took = (datetime.fromisoformat(d["finished_at"]) - datetime.fromisoformat(d["started_at"]))
        assert abs(took.total_seconds() - content["duration_s"]) < 0.3
    files = played_files(commune.record_dir, final["occurrence"]["id"])
    assert sorted(files) == sorted(commune.net.clusters)
    for path in files.values():  # what each cluster played is exactly the content sent
        assert hashlib.sha256(path.read_bytes()).hexdigest() == content["sha256"]
    # the officer's proof, per village: all 14 played, with the times they were heard
    r = commune.api.get(f"/api/v1/broadcasts/{b['id']}/report?by=village")
    assert r.status_code == 200, r.text
    villages = r.json()["villages"]
    assert sorted(v["area_id"] for v in villages) == sorted(
        {c.area_id for c in commune.net.clusters.values()})
    assert len(villages) == 14
    assert all(v["played"] == v["targeted"] == v["deliveries"] and v["ratio"] == 1.0
               for v in villages), villages
    by_id = {v["area_id"]: v for v in villages}
    assert by_id["hd-v01"]["targeted"] == 2  # the village with two clusters
    first = min(datetime.fromisoformat(v["first_started_at"]) for v in villages)
    assert abs((first - min(starts)).total_seconds()) < 0.002
    csv_text = commune.api.get(f"/api/v1/broadcasts/{b['id']}/report?by=village&format=csv").text
    assert csv_text.count("\n") == 15 and "first_started_at" in csv_text.splitlines()[0]
    row = next(line for line in csv_text.splitlines() if line.startswith("hd-v01,"))
    local = datetime.fromisoformat(by_id["hd-v01"]["first_started_at"]).astimezone(
        ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%Y-%m-%d %H:%M:%S")
    assert f",{local}" in row and "+07:00" in row  # the officer's own clock, not UTC


def test_one_village_plays_there_and_nowhere_else(commune: Commune) -> None:
    village = "hd-v01"  # the village with two clusters
    content = tts(commune.api, "Thông báo họp thôn Đồng Bông lúc tám giờ tối.")
    b = schedule(commune.api, content["id"], {"areas": [village]}, in_s=3)
    final = wait_final(commune.api, b["id"])
    assert sorted(d["cluster_id"] for d in final["deliveries"]) == ["hd-c01", "hd-c02"]
    assert {d["state"] for d in final["deliveries"]} == {"played"}
    occ = final["occurrence"]["id"]
    assert sorted(played_files(commune.record_dir, occ)) == ["hd-c01", "hd-c02"]
    others = [c for c in commune.sim.clusters if c.id not in ("hd-c01", "hd-c02")]
    assert all(occ not in c.player.occurrences for c in others)


def test_content_already_cached_is_not_sent_again(commune: Commune) -> None:
    text = "Nhắc lại: họp thôn lúc tám giờ tối."
    first = tts(commune.api, text)
    rt = commune.api.app.state.runtime  # type: ignore[attr-defined]
    wait_final(commune.api, schedule(commune.api, first["id"], {"areas": ["hd-v03"]}, 2)["id"])
    sent_before = rt.content.chunks_sent
    again = tts(commune.api, text)  # same audio: same content address
    assert again["sha256"] == first["sha256"]
    final = wait_final(commune.api,
                       schedule(commune.api, again["id"], {"areas": ["hd-v03"]}, 2)["id"])
    assert {d["state"] for d in final["deliveries"]} == {"played"}
    assert rt.content.chunks_sent == sent_before


def _capture_commands(port: int) -> tuple[mqtt.Client, list[tuple[str, bytes]]]:
    seen: list[tuple[str, bytes]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-eavesdropper")
    c.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload))
    c.connect("127.0.0.1", port)
    c.subscribe([("loa/v1/area/+/cmd", 1), ("loa/v1/cluster/+/cmd", 1)])
    c.loop_start()
    return c, seen


def _publish_by_hand(port: int, topic: str, payload: bytes) -> None:
    """As an attacker would: mosquitto_pub when installed, else paho."""
    tool = shutil.which("mosquitto_pub")
    if tool:
        subprocess.run([tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-s"],
                       input=payload, check=True, timeout=10)
        return
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def _refusals(commune: Commune, reason: RefusalReason, after: int) -> set[str]:
    return {c.id for c in commune.sim.clusters
            if any(r.reason is reason for r in c.refusals[after:])}


def test_forged_and_replayed_commands_are_refused_and_nothing_plays(commune: Commune) -> None:
    port = commune.broker.port
    spy, seen = _capture_commands(port)
    content = tts(commune.api, "Thông báo thử nghiệm hệ thống loa.")
    b = schedule(commune.api, content["id"], {"areas": [COMMUNE]}, in_s=2)
    wait_final(commune.api, b["id"])
    spy.disconnect()
    spy.loop_stop()
    # (amqtt also hands out retained messages of non-matching topics: filter by topic)
    captured = [(t, p) for t, p in seen if t.endswith("/cmd") and json.loads(p)["kind"] == "play"]
    assert captured, "the legitimate command was not seen on the wire"
    topic, signed = captured[0]
    marks = {c.id: len(c.refusals) for c in commune.sim.clusters}
    occurrences = {c.id: len(c.player.occurrences) for c in commune.sim.clusters}
    start = min(marks.values())
    all_ids = set(commune.net.clusters)

    # 1. an unsigned command typed by hand
    forged = json.loads(signed)
    del forged["sig"]
    forged["id"] = "f" * 32
    _publish_by_hand(port, topic, json.dumps(forged).encode())
    wait_for(lambda: _refusals(commune, RefusalReason.UNSIGNED, start) == all_ids, 10,
             "every cluster refusing the unsigned command")
    # 2. the captured signed command, replayed verbatim
    _publish_by_hand(port, topic, signed)
    wait_for(lambda: _refusals(commune, RefusalReason.REPLAYED, start) == all_ids, 10,
             "every cluster refusing the replay")
    # 3. the captured command with a new start time (signature no longer matches)
    tampered = json.loads(signed)
    tampered["id"] = "e" * 32
    tampered["body"]["start_at"] = (datetime.now(UTC) + timedelta(seconds=3)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    _publish_by_hand(port, topic, json.dumps(tampered).encode())
    wait_for(lambda: _refusals(commune, RefusalReason.BAD_SIGNATURE, start) == all_ids, 10,
             "every cluster refusing the tampered command")
    time.sleep(0.5)  # a would-be play would have been scheduled by now; prove none was
    assert {c.id: len(c.player.occurrences) for c in commune.sim.clusters} == occurrences
    rt = commune.api.app.state.runtime  # type: ignore[attr-defined]
    wait_for(lambda: rt.dispatcher.counters["refused_replayed"] >= 15, 5,
             "the controller hearing the refusals")


def _counts(api: TestClient) -> tuple[int, int, int]:
    rt = api.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as db:
        return (db.scalar(select(func.count()).select_from(Content)) or 0,
                db.scalar(select(func.count()).select_from(ContentBlob)) or 0,
                db.scalar(select(func.count()).select_from(Broadcast)) or 0)


def test_bad_input_gets_clear_4xx_and_stores_nothing(commune: Commune) -> None:
    api = commune.api
    content = tts(api, "Nội dung hợp lệ.")
    before = _counts(api)
    cases = [
        ("text as audio", api.post("/api/v1/contents",
                                   files={"file": ("note.mp3", "Họp lúc 8 giờ".encode(), "audio/mpeg")}),
         415, "text file"),
        ("empty file", api.post("/api/v1/contents", files={"file": ("a.mp3", b"", "audio/mpeg")}),
         422, "empty"),
        ("over the limit", api.post("/api/v1/contents",
                                    files={"file": ("big.wav", b"RIFF" + b"\0" * (3 * 1024 * 1024),
                                                    "audio/wav")}), 413, "limit"),
        ("empty text", api.post("/api/v1/contents/tts", json={"text": "   "}), 422, "empty"),
        ("past start", api.post("/api/v1/broadcasts", json={
            "content_id": content["id"], "targets": {"areas": [COMMUNE]},
            "start_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}), 422, "past"),
        ("no offset", api.post("/api/v1/broadcasts", json={
            "content_id": content["id"], "targets": {"areas": [COMMUNE]},
            "start_at": "2030-01-01T05:30:00"}), 422, "timezone"),
        ("unknown area", api.post("/api/v1/broadcasts", json={
            "content_id": content["id"], "targets": {"areas": ["no-such-village"]},
            "start_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}), 422,
         "no-such-village"),
        ("unknown content", api.post("/api/v1/broadcasts", json={
            "content_id": "nope", "targets": {"areas": [COMMUNE]},
            "start_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}), 422, "content"),
        ("bad rrule", api.post("/api/v1/broadcasts", json={
            "content_id": content["id"], "targets": {"areas": [COMMUNE]},
            "recurrence": {"rrule": "FREQ=SOMETIMES"}}), 422, "RRULE"),
    ]
    for name, r, status, words in cases:
        assert r.status_code == status, (name, r.status_code, r.text)
        assert words.lower() in r.text.lower(), (name, r.text)
    assert _counts(api) == before


def test_every_endpoint_but_login_needs_a_token(commune: Commune) -> None:
    anon = TestClient(commune.api.app)
    for path in ("/api/v1/areas", "/api/v1/clusters", "/api/v1/broadcasts"):
        assert anon.get(path).status_code == 401
    assert anon.post("/api/v1/contents/tts", json={"text": "x"}).status_code == 401
    assert anon.post("/api/v1/auth/token",
                     data={"username": "admin", "password": "wrong"}).status_code == 401


def test_api_lists_the_commune(commune: Commune) -> None:
    areas = commune.api.get("/api/v1/areas").json()
    assert sum(a["kind"] == "village" for a in areas) == 14
    clusters = commune.api.get("/api/v1/clusters").json()
    assert len(clusters) == 15 and sum(len(c["speakers"]) for c in clusters) == 30
    c = clusters[0]
    assert c["telemetry"]["link"]["type"] in ("4g", "wifi", "ethernet") and c["last_seen"]


def test_recurring_slots_are_planned_in_local_time_and_cancel_unplans(commune: Commune) -> None:
    api = commune.api
    content = tts(api, "Chương trình phát thanh buổi sáng.")
    r = api.post("/api/v1/broadcasts", json={
        "content_id": content["id"], "targets": {"areas": [COMMUNE]}, "recurrence": {
            "rrule": ["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA;BYHOUR=5;BYMINUTE=30",
                      "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA;BYHOUR=17;BYMINUTE=0"],
            "timezone": "Asia/Ho_Chi_Minh"}})
    assert r.status_code == 201, r.text
    bc = r.json()
    slots = [datetime.fromisoformat(s).astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
             for s in bc["next_slots"]]
    assert len(slots) == 5
    assert all((s.hour, s.minute) in ((5, 30), (17, 0)) and s.weekday() != 6 for s in slots)
    assert slots == sorted(slots)
    rt = api.app.state.runtime  # type: ignore[attr-defined]
    jobs = [j for j in rt.scheduler._sched.get_jobs() if j.id.startswith(bc["id"])]
    assert len(jobs) == 1  # only the next slot is planned; each run plans the following one
    lead = timedelta(seconds=rt.settings.dispatch_lead_s)
    assert jobs[0].next_run_time == slots[0] - lead
    assert api.post(f"/api/v1/broadcasts/{bc['id']}/cancel").json()["status"] == "cancelled"
    assert not [j for j in rt.scheduler._sched.get_jobs() if j.id.startswith(bc["id"])]


def test_an_emergency_pushes_its_content_to_the_area_right_after_the_command(
        commune: Commune) -> None:
    """What third-party firmware sees (protocol §6): subscribed only as §3 says, with no
    content subscription and no request, it gets the signed command and then every chunk
    on the area's content topic, which together make the content the manifest names."""
    got: list[tuple[str, bytes]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="third-party-hd-c99")
    subscribed = threading.Event()
    c.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect("127.0.0.1", commune.broker.port)
    c.subscribe([(f"loa/v1/area/{COMMUNE}/cmd", 1), (f"loa/v1/area/{COMMUNE}/content/+/+", 1)])
    c.loop_start()
    try:
        assert subscribed.wait(5), "no SUBACK"
        content = tts(commune.api, "Cảnh báo khẩn cấp: nước lũ đang lên.")
        r = commune.api.post("/api/v1/broadcasts", json={
            "content_id": content["id"], "targets": {"areas": [COMMUNE]},
            "priority": "emergency"})
        assert r.status_code == 201, r.text
        manifest = None

        def assembled() -> bytes | None:
            nonlocal manifest
            for topic, payload in got:
                if topic.endswith("/cmd") and manifest is None:
                    cmd = json.loads(payload)
                    if cmd["kind"] == "play" and cmd["body"]["priority"] == "emergency":
                        manifest = cmd["body"]["content"]
            if manifest is None:
                return None
            prefix = f"loa/v1/area/{COMMUNE}/content/{manifest['sha256']}/"
            parts = {int(t[len(prefix):]): p for t, p in got if t.startswith(prefix)}
            if len(parts) < manifest["chunks"]:
                return None
            return b"".join(parts[i] for i in range(manifest["chunks"]))

        blob = wait_for(assembled, 10, "the command and every pushed chunk")
        assert manifest is not None and len(blob) == manifest["size"]
        assert hashlib.sha256(blob).hexdigest() == manifest["sha256"] == content["sha256"]
        first_chunk = next(i for i, (t, _) in enumerate(got) if "/content/" in t)
        assert got[first_chunk - 1][0].endswith("/cmd")  # the command came first
        final = wait_final(commune.api, r.json()["id"], timeout=60)
        assert {d["state"] for d in final["deliveries"]} == {"played"}
    finally:
        c.disconnect()
        c.loop_stop()


def test_an_emergency_to_one_cluster_fetches_its_retained_content(commune: Commune) -> None:
    """No area push for a cluster's own topic: after its grace the cluster subscribes and
    takes the retained chunks, and plays at once."""
    content = tts(commune.api, "Cảnh báo khẩn cấp cho thôn Đồng Giang.")
    r = commune.api.post("/api/v1/broadcasts", json={
        "content_id": content["id"], "targets": {"clusters": ["hd-c04"]},
        "priority": "emergency"})
    assert r.status_code == 201, r.text
    final = wait_final(commune.api, r.json()["id"], timeout=60)
    assert [(d["cluster_id"], d["state"]) for d in final["deliveries"]] == [("hd-c04", "played")]
    sim = next(c for c in commune.sim.clusters if c.id == "hd-c04")
    assert content["sha256"] in sim.cached
