"""Availability over a simulated day with a known outage schedule, on each backend."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from controller.db.models import Broadcast, Content, ContentBlob, Delivery, Occurrence
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.fleet.availability import availability_report
from controller.fleet.health import HealthTracker
from devices.areas import load_fixture
from devices.messages import Birth, Death, SpeakerReport

pytestmark = pytest.mark.integration
VN = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = datetime(2026, 11, 20, tzinfo=VN)  # a Friday, local midnight

# cluster -> outages as (start, minutes) in local time of DAY
OUTAGES = {
    "hd-c01": [(timedelta(hours=2), 90)],  # a power cut at night
    "hd-c02": [(timedelta(hours=8, minutes=6 * k), 3) for k in range(10)],  # a flapping link
    "hd-c03": [(timedelta(hours=22), 120)],  # down from 22:00 past midnight
    "hd-c04": [(-timedelta(hours=2), 150)],  # down since before midnight until 00:30
}


def test_availability_matches_the_injected_downtime_within_one_percent(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    net = load_fixture("huong-dao")
    with sessions() as db:
        register_network(db, net)
        h = HealthTracker()
        h.load(db)
        events: list[tuple[datetime, str, str]] = []
        for cid in net.clusters:
            events.append((DAY - timedelta(hours=3), cid, "up"))
        for cid, outages in OUTAGES.items():
            for start, minutes in outages:
                events.append((DAY + start, cid, "down"))
                events.append((DAY + start + timedelta(minutes=minutes), cid, "up"))
        bd = {cid: 0 for cid in net.clusters}
        for at, cid, what in sorted(events):
            if what == "up":
                bd[cid] += 1
                h.on_birth(db, Birth(v=1, cluster_id=cid, state="online", bd_seq=bd[cid], ts=at,
                                     firmware="t", heartbeat_s=30,
                                     speakers=[SpeakerReport(index=1, state="ok")]), at)
            else:
                h.on_death(db, Death(v=1, cluster_id=cid, state="offline", bd_seq=bd[cid]), at)
            db.commit()
        # deliveries: hd-c01 played 3 of 4 slots that day
        db.add(ContentBlob(sha256="a" * 64, data=b"x"))
        db.flush()
        db.add(Content(id="c1", sha256="a" * 64, kind="tts", codec="opus", container="ogg",
                       mime="audio/ogg", size=1, duration_ms=1000))
        db.add(Broadcast(id="b1", content_id="c1", targets={"areas": ["hd-v01"]},
                         start_at=DAY, status="completed"))
        for k in range(4):
            start = DAY + timedelta(hours=5 + k)
            db.add(Occurrence(id=f"o{k}", broadcast_id="b1", scheduled_at=start, start_at=start,
                              ends_at=start + timedelta(seconds=1), status="completed",
                              deliveries=[Delivery(cluster_id="hd-c01",
                                                   state="played" if k else "missed")]))
        db.commit()
        report = availability_report(db, "vn-vp-tamduong-huongdao", DAY, DAY + timedelta(days=1),
                                     "day", VN)
    engine.dispose()
    [period] = report["periods"]
    by_id = {c["cluster_id"]: c for c in period["clusters"]}
    expected_down = {cid: 0.0 for cid in net.clusters}
    for cid, outages in OUTAGES.items():
        for start, minutes in outages:
            a = max(DAY + start, DAY)
            b = min(DAY + start + timedelta(minutes=minutes), DAY + timedelta(days=1))
            expected_down[cid] += max(0.0, (b - a).total_seconds())
    for cid, down in expected_down.items():
        got = by_id[cid]["downtime_s"]
        assert abs(got - down) <= 0.01 * max(down, 864), (cid, got, down)
        assert abs(by_id[cid]["availability"] - (1 - down / 86400)) <= 0.01
    assert by_id["hd-c01"]["availability"] == pytest.approx(1 - 90 / 1440, abs=1e-4)
    assert by_id["hd-c01"]["deliveries_targeted"] == 4
    assert by_id["hd-c01"]["delivery_success"] == 0.75
    areas = {a["area_id"]: a for a in period["areas"]}
    village = areas["hd-v01"]["availability"]  # hd-c01 and hd-c02
    assert village == pytest.approx(1 - (90 + 30) / 2 / 1440, abs=1e-4)
    commune = areas["vn-vp-tamduong-huongdao"]["availability"]
    assert commune == pytest.approx(1 - sum(expected_down.values()) / 15 / 86400, abs=1e-4)
