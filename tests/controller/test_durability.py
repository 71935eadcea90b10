"""What the controller does when the broker link, the database or a cluster's report is not
there when expected, on the in-memory link (no broker; the real processes are killed in
``tests/integration/test_faults.py``)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from controller.broadcasting.content_server import ContentServer
from controller.broadcasting.dispatcher import Dispatcher
from controller.broadcasting.spool import Spool
from controller.db.lock import AnotherController, DatabaseLock
from controller.db.models import Broadcast, Content, ContentBlob, Delivery, Occurrence, utcnow
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.settings import Settings
from controller.storage import StorageMonitor, classify
from controller.transport.link import Inbound
from devices import topics
from devices.areas import generate
from devices.messages import DeliveryEvent, DeliveryState, dumps
from tests.utils.broker import wait_for
from tests.utils.commune import memory_commune

COMMUNE = "vn-vp-tamduong-huongdao"


def _station(tmp: Path, clusters: int = 3) -> tuple[Settings, object, list[str]]:
    settings = Settings(data_dir=tmp, admin_password="x" * 12, report_grace_s=5)
    upgrade(settings.db_url)
    sessions = make_sessionmaker(make_engine(settings.db_url))
    net = generate(1, clusters)
    with sessions() as db:
        register_network(db, net)
        db.add(ContentBlob(sha256="a" * 64, data=b"x"))
        db.flush()
        db.add(Content(id="c1", sha256="a" * 64, kind="file", codec="mp3", container="mp3",
                       mime="audio/mpeg", size=1, duration_ms=10_000))
        db.commit()
    return settings, sessions, sorted(net.clusters)


def _aired(sessions: object, clusters: list[str], start: datetime) -> str:
    with sessions() as db:  # type: ignore[operator]
        bc = Broadcast(id=uuid.uuid4().hex, title="t", content_id="c1", targets={},
                       start_at=start, recurrence=None, expires_at=None, status="active")
        occ = Occurrence(id=uuid.uuid4().hex, broadcast_id=bc.id, scheduled_at=start,
                         start_at=start, ends_at=start + timedelta(seconds=10), status="sent")
        db.add_all([bc, occ])
        db.flush()
        db.add_all([Delivery(occurrence_id=occ.id, cluster_id=c, state="ready",
                             updated_at=start) for c in clusters])
        db.commit()
        return occ.id


def test_a_late_report_corrects_what_the_controller_concluded(tmp_path: Path) -> None:
    settings, sessions, clusters = _station(tmp_path)
    start = utcnow() - timedelta(minutes=5)
    occ = _aired(sessions, clusters, start)
    d = Dispatcher(settings, sessions, SigningKey.generate(), lambda *_: True,  # type: ignore[arg-type]
                   ContentServer(lambda *_: True, lambda _sha: None, 16_384))
    with sessions() as db:  # type: ignore[operator]
        d.sweep(db, utcnow())  # no report came: the controller concludes
        db.commit()
    with sessions() as db:  # type: ignore[operator]
        rows = {r.cluster_id: r for r in db.scalars(select(Delivery))}
    assert {r.state for r in rows.values()} == {"failed"}
    assert all(r.assumed and r.error.startswith("no final report (last: ready)")
               for r in rows.values())
    # the first cluster's own report arrives (it was offline): it played
    with sessions() as db:  # type: ignore[operator]
        d.begin_batch()
        d.on_delivery(db, DeliveryEvent(v=1, kind="delivery", cluster_id=clusters[0], seq=9,
                                        ts=utcnow(), occurrence_id=occ,
                                        state=DeliveryState.PLAYED, at=start + timedelta(seconds=10)))
        d.write_batch(db)
        d.end_batch()
        db.commit()
    with sessions() as db:  # type: ignore[operator]
        rows = {r.cluster_id: r for r in db.scalars(select(Delivery))}
    first = rows[clusters[0]]
    assert first.state == "played" and not first.assumed
    assert first.corrected_from is not None
    assert first.corrected_from.startswith("failed: no final report (last: ready)")
    assert first.corrected_at is not None
    assert d.counters["corrected"] == 1
    # the others stay as concluded, and a cluster's own failure is not overturned by anything
    assert rows[clusters[1]].state == "failed" and rows[clusters[1]].assumed


def test_a_play_the_broker_never_took_is_sent_when_the_link_returns(tmp_path: Path) -> None:
    with memory_commune(tmp_path, dispatch_lead_s=60) as (api, link):
        c = api.post("/api/v1/contents/tts", json={"text": "Thông báo."}).json()["id"]
        link.go_offline()
        start = datetime.now(UTC) + timedelta(seconds=30)
        r = api.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": [COMMUNE]}, "start_at": start.isoformat()})
        assert r.status_code == 201, r.text
        bc = r.json()["id"]

        def occurrence() -> dict | None:  # type: ignore[type-arg]
            b = api.get(f"/api/v1/broadcasts/{bc}").json()
            return b["occurrence"]  # type: ignore[no-any-return]

        wait_for(lambda: (o := occurrence()) and o["status"] == "pending", 10,
                 "the occurrence, not sent")
        assert not link.sent_to(topics.area_cmd(COMMUNE))
        link.go_online()
        plays = wait_for(lambda: link.sent_to(topics.area_cmd(COMMUNE)), 10,
                         "the play once the link is back")
        body = json.loads(plays[0].payload)["body"]
        # its start was still ahead: it keeps it, every cluster starts together
        assert abs((datetime.fromisoformat(body["start_at"]) - start).total_seconds()) < 0.01
        assert body["revision"] == 0
        wait_for(lambda: occurrence()["status"] == "sent", 10, "the occurrence sent")  # type: ignore[index]


def test_a_play_sent_past_its_start_gets_a_new_start_or_is_missed(tmp_path: Path) -> None:
    with memory_commune(tmp_path, dispatch_lead_s=60, late_grace_s=30) as (api, link):
        c = api.post("/api/v1/contents/tts", json={"text": "Thông báo."}).json()["id"]
        link.go_offline()
        ids = []
        for delay in (2, 3):
            start = datetime.now(UTC) + timedelta(seconds=delay)
            r = api.post("/api/v1/broadcasts", json={
                "content_id": c, "targets": {"areas": [COMMUNE]},
                "start_at": start.isoformat()})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        late, too_late = ids
        with api.app.state.runtime.sessions() as db:  # the second: as if 10 minutes ago
            wait_for(lambda: db.scalar(select(Occurrence.status).where(
                Occurrence.broadcast_id == too_late)) == "pending", 10, "its occurrence")
            occ = db.scalar(select(Occurrence).where(Occurrence.broadcast_id == too_late))
            occ.scheduled_at -= timedelta(minutes=10)
            occ.start_at -= timedelta(minutes=10)
            occ.ends_at -= timedelta(minutes=10)
            db.commit()
        wait_for(lambda: datetime.now(UTC) > start + timedelta(seconds=1), 10,
                 "the first one's start to pass")
        link.go_online()
        b = wait_for(lambda: (x := api.get(f"/api/v1/broadcasts/{late}").json())[
            "occurrence"]["status"] == "sent" and x, 10, "the late one sent")
        plays = [json.loads(m.payload)["body"] for m in link.sent_to(topics.area_cmd(COMMUNE))]
        mine = [p for p in plays if p["broadcast_id"] == late]
        assert len(mine) == 1 and mine[0]["revision"] == 1
        new_start = datetime.fromisoformat(mine[0]["start_at"])
        assert new_start > start  # later than planned, the same for every cluster
        # (the wire carries milliseconds)
        assert abs((datetime.fromisoformat(b["occurrence"]["start_at"]) - new_start)
                   .total_seconds()) < 0.001
        missed = wait_for(lambda: (x := api.get(f"/api/v1/broadcasts/{too_late}").json())[
            "occurrence"]["status"] == "missed" and x, 10, "the other one missed")
        assert not any(p["broadcast_id"] == too_late for p in plays)
        assert {d["state"] for d in missed["deliveries"]} == {"missed"}
        assert all("broker could not be reached" in d["error"] for d in missed["deliveries"])


def test_a_batch_the_database_refuses_is_retried_and_acknowledged_only_once_committed(
        tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, link):
        rt = api.app.state.runtime
        real = rt.ingest._apply_batch
        failures = {"left": 3}

        def flaky(msgs: list[Inbound]) -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise OperationalError("COMMIT", {}, Exception("database or disk is full"))
            real(msgs)

        rt.ingest._apply_batch = flaky
        ev = DeliveryEvent(v=1, kind="delivery", cluster_id="hd-c01", seq=1, ts=utcnow(),
                           occurrence_id="nope", state=DeliveryState.PLAYED, at=utcnow())
        link.inbox.put(Inbound(topics.cluster_event("hd-c01"), dumps(ev), token=(1, 7)))
        wait_for(lambda: link.counters["acked"] == 1, 10, "the message acknowledged")
        assert failures["left"] == 0 and rt.ingest.retries == 3
        assert rt.ingest.rejected["error"] == 0
        assert rt.dispatcher.counters["delivery_unknown"] == 1  # applied, after the retries
        # the outage opened the controller's storage alert, and it cleared
        wait_for(lambda: rt.storage.problem is None, 10, "storage ok again")
        metrics = api.get("/metrics").text
        assert "loa_storage_failures_total 3.0" in metrics
        assert 'loa_storage_ok{reason=""} 1.0' in metrics


def test_storage_errors_are_classified() -> None:
    def op(text: str) -> OperationalError:
        return OperationalError("x", {}, Exception(text))

    assert classify(op("database or disk is full")) == "disk_full"
    assert classify(op("could not extend file: No space left on device")) == "disk_full"
    assert classify(op("attempt to write a readonly database")) == "read_only"
    assert classify(op('connection to server at "127.0.0.1", port 5432 failed: '
                       "Connection refused")) == "unreachable"
    assert classify(op("database is locked")) == "busy"
    m = StorageMonitor()
    p = m.failed(op("database or disk is full"))
    assert p.body()["code"] == "storage_unavailable"
    assert p.body()["params"]["reason"] == "disk_full"
    alert = m.alert()
    assert alert is not None and alert.code == "storage_disk_full"
    m.ok()
    assert m.problem is None and m.alert() is None


def test_an_airing_in_the_spool_is_recorded_on_start(tmp_path: Path) -> None:
    """A crash between an emergency's publish and its commit: the spool has it."""
    settings, sessions, clusters = _station(tmp_path)
    spool = Spool(tmp_path / "spool")
    now = utcnow()
    bc_id, occ_id = uuid.uuid4().hex, uuid.uuid4().hex
    intent = {"id": occ_id, "broadcast_id": bc_id, "occurrence": {
        "id": occ_id, "broadcast_id": bc_id, "scheduled_at": now, "start_at": now,
        "ends_at": now + timedelta(seconds=10), "status": "sent", "content_id": "c1",
        "revision": 0, "sent_at": now},
        "broadcast": {"id": bc_id, "title": "Khẩn", "content_id": "c1", "targets": {},
                      "priority": "emergency", "status": "active", "start_at": None},
        "deliveries": {"state": "sent", "error": None, "updated_at": now,
                       "clusters": clusters, "offline": clusters[:1]}}
    assert spool.add(intent)
    with (tmp_path / "spool" / "airings.jsonl").open("a") as f:
        f.write('{"intent": {"id": "cut sho')  # the crash cut the next line short
    d = Dispatcher(settings, sessions, SigningKey.generate(), lambda *_: True,  # type: ignore[arg-type]
                   ContentServer(lambda *_: True, lambda _sha: None, 16_384), spool=spool)
    assert d.recover_spool() == 1
    with sessions() as db:  # type: ignore[operator]
        bc = db.get(Broadcast, bc_id)
        assert bc is not None and bc.priority == "emergency" and bc.status == "active"
        rows = {r.cluster_id: r for r in db.scalars(select(Delivery).where(
            Delivery.occurrence_id == occ_id))}
        assert {r.state for r in rows.values()} == {"sent"} and set(rows) == set(clusters)
        assert rows[clusters[0]].error == "cluster offline when sent"
        assert rows[clusters[1]].error is None
    assert spool.pending() == []
    assert d.recover_spool() == 0  # and a second start records nothing twice


def test_one_controller_per_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loa.db'}"
    first = DatabaseLock(url)
    first.acquire()
    try:
        with pytest.raises(AnotherController, match="another controller holds"):
            DatabaseLock(url).acquire()
    finally:
        first.release()
    again = DatabaseLock(url)
    again.acquire()  # released: the next start takes it
    again.release()
