"""Delivery reports are applied in batches: each batch loads only the deliveries its reports
are about (several occurrences at once, a report for a cluster the occurrence never
targeted, one that was not asked for up front), and writes back exactly what changed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nacl.signing import SigningKey
from sqlalchemy import select

from controller.broadcasting.content_server import ContentServer
from controller.broadcasting.dispatcher import Dispatcher
from controller.db.models import Broadcast, Content, ContentBlob, Delivery, Occurrence
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.settings import Settings
from devices.areas import generate
from devices.messages import DeliveryEvent, DeliveryState

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def report(occ: str, cluster: str, state: DeliveryState, seq: int) -> DeliveryEvent:
    return DeliveryEvent(v=1, kind="delivery", cluster_id=cluster, seq=seq, ts=NOW,
                         occurrence_id=occ, state=state, at=NOW + timedelta(seconds=seq))


def test_a_batch_loads_and_writes_only_the_deliveries_it_reports_on(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_password="x" * 12)
    upgrade(settings.db_url)
    sessions = make_sessionmaker(make_engine(settings.db_url))
    net = generate(1, 6)
    clusters = sorted(net.clusters)
    with sessions() as db:
        register_network(db, net)
        db.add(ContentBlob(sha256="a" * 64, data=b"x"))
        db.flush()
        db.add(Content(id="c1", sha256="a" * 64, kind="file", codec="mp3", container="mp3",
                       mime="audio/mpeg", size=1, duration_ms=1000))
        occs = []
        for name in ("first", "second"):
            bc = Broadcast(id=uuid.uuid4().hex, title=name, content_id="c1", targets={},
                           start_at=None, recurrence=None, expires_at=None, status="active")
            occ = Occurrence(id=uuid.uuid4().hex, broadcast_id=bc.id, scheduled_at=NOW,
                             start_at=NOW, ends_at=NOW + timedelta(seconds=1), status="sent")
            db.add_all([bc, occ])
            db.flush()
            # the second occurrence targets only the first four clusters
            db.add_all([Delivery(occurrence_id=occ.id, cluster_id=c, state="sent",
                                 updated_at=NOW) for c in clusters[:6 if name == "first" else 4]])
            occs.append(occ.id)
        db.commit()
    first, second = occs
    d = Dispatcher(settings, sessions, SigningKey.generate(), lambda *_: True,
                   ContentServer(lambda *_: True, lambda _sha: None, 16_384))
    loaded: list[object] = []
    with sessions() as db:
        db.execute = _recording(db.execute, loaded)  # type: ignore[method-assign]
        d.begin_batch()
        d.load_deliveries(db, {first: {clusters[0], clusters[1]},
                               second: {clusters[0], clusters[5]}})
        d.on_delivery(db, report(first, clusters[0], DeliveryState.PLAYING, 1))
        d.on_delivery(db, report(first, clusters[1], DeliveryState.PLAYED, 2))
        d.on_delivery(db, report(second, clusters[0], DeliveryState.RECEIVED, 3))
        d.on_delivery(db, report(second, clusters[5], DeliveryState.PLAYING, 4))  # not its
        d.on_delivery(db, report(first, clusters[2], DeliveryState.PLAYING, 5))  # not asked
        assert d.write_batch(db) == 4
        d.end_batch()
        db.commit()
    # one query for each occurrence's rows up front, one for the report not asked for
    assert len([q for q in loaded if "FROM deliveries" in q]) == 3
    assert d.counters["delivery_unknown"] == 1
    with sessions() as db:
        rows = {(r.occurrence_id, r.cluster_id): r for r in db.scalars(select(Delivery))}
    assert rows[first, clusters[0]].state == "playing"
    assert rows[first, clusters[0]].started_at == NOW + timedelta(seconds=1)
    assert rows[first, clusters[1]].state == "played"
    assert rows[first, clusters[1]].finished_at == NOW + timedelta(seconds=2)
    assert rows[second, clusters[0]].state == "received"
    assert rows[first, clusters[2]].state == "playing"
    assert (second, clusters[5]) not in rows
    untouched = [rows[first, c] for c in clusters[3:]] + [rows[second, c] for c in clusters[1:4]]
    assert {r.state for r in untouched} == {"sent"}


def _recording(execute, seen: list[object]):  # type: ignore[no-untyped-def]
    def wrapper(statement, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(str(statement))
        return execute(statement, *args, **kwargs)
    return wrapper
