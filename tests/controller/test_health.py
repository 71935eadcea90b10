from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from controller.db.models import Cluster
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.fleet.health import HealthTracker, View
from controller.transport.link import Inbound, Inbox
from devices.areas import load_fixture


def test_sequence_gaps_are_found_and_reordering_is_not_a_gap() -> None:
    h = HealthTracker()
    h.views["c"] = View("online", 1, None, 30, None)
    assert not h.note_seq("c", 10)  # baseline after a birth
    assert not h.note_seq("c", 11)
    assert not h.note_seq("c", 11)  # duplicate
    assert h.note_seq("c", 14)  # 12 and 13 missed
    assert not h.note_seq("c", 13)  # late arrival of a missed one
    assert h.counters["seq_gaps"] == 1
    assert not h.note_seq("unknown", 5)


def test_a_heartbeat_waiting_in_the_inbox_is_not_silence(tmp_path: Path) -> None:
    """The controller is behind on its own inbox: a cluster whose next heartbeat is still
    waiting in it is not declared offline; one that was silent before the oldest waiting
    message arrived is. Nothing waiting: silence is measured up to now."""
    url = f"sqlite:///{tmp_path / 'loa.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    with make_sessionmaker(engine)() as db:
        register_network(db, load_fixture("huong-dao"))
        ids = sorted(db.scalars(select(Cluster.id)))[:2]
        for cid, ago in zip(ids, (50, 90), strict=True):  # heartbeats every 30 s: 45 s max
            c = db.get(Cluster, cid)
            assert c is not None
            c.state, c.provisioned, c.heartbeat_s = "online", True, 30
            c.last_seen = now - timedelta(seconds=ago)
        db.commit()
        h = HealthTracker()
        h.load(db)
        # the oldest message waiting arrived 40 s ago: what came before it has been taken
        assert h.sweep(db, now, heard=now - timedelta(seconds=40)) == [ids[1]]
        db.commit()
        states = {c.id: c.state for c in db.scalars(select(Cluster).where(Cluster.id.in_(ids)))}
        assert states == {ids[0]: "online", ids[1]: "offline"}
        assert h.sweep(db, now) == [ids[0]]  # the inbox drained: it was silent after all
        db.commit()
        assert db.get(Cluster, ids[0]).state == "offline"  # type: ignore[union-attr]
    engine.dispose()


def test_the_inbox_knows_when_its_oldest_waiting_message_arrived() -> None:
    box = Inbox(100)
    assert box.oldest_arrival() is None
    t0 = time.time()
    box.put_many([Inbound("a", b"1"), Inbound("a", b"2")])
    t1 = time.time()
    box.put(Inbound("a", b"3"))
    first = box.oldest_arrival()
    assert first is not None and t0 <= first <= t1
    assert [m.payload for m in box.take(1, 0)] == [b"1"]
    assert box.oldest_arrival() == first  # b"2" came in the same put
    box.take(1, 0)
    third = box.oldest_arrival()
    assert third is not None and third >= t1
    box.take(10, 0)
    assert box.oldest_arrival() is None
