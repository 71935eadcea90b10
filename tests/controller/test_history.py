"""Telemetry history: minute buckets folded into hours give the hour's exact figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from controller.db.models import TelemetrySample
from controller.fleet.history import TelemetryHistory
from devices.messages import Telemetry

T0 = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


class Rows:
    """A real database (SQLite in memory) and the rows flush() wrote, by resolution and
    bucket."""

    def __init__(self) -> None:
        engine = create_engine("sqlite://")
        TelemetrySample.__table__.create(engine)  # type: ignore[attr-defined]
        self.session = Session(engine)

    @property
    def rows(self) -> dict[tuple[str, datetime], Any]:
        self.session.commit()
        return {(r.resolution, r.bucket): r
                for r in self.session.scalars(select(TelemetrySample))}


def sample(i: int) -> dict[str, Any]:
    return {"link": {"type": "4g", "rssi_dbm": -70 - i % 13}, "amp_temp_c": 40 + (i % 7) * 1.5,
            "power": {"source": "battery" if i % 5 == 0 else "mains", "battery_pct": 100 - i % 30},
            "speakers": [{"index": 1, "state": "open" if i % 11 == 0 else "ok"}],
            "volume_pct": i % 100, "clock_offset_ms": i, "storage_free_kb": 1000 - i}


def heartbeat(i: int, at: datetime) -> Telemetry:
    return Telemetry.model_validate({"v": 1, "cluster_id": "c1", "seq": i, "bd_seq": 1, "ts": at,
                                     "uptime_s": i, "firmware": "t", **sample(i)})


def test_hour_buckets_equal_the_samples_of_their_hour() -> None:
    h, db = TelemetryHistory(), Rows()
    times = [T0 + timedelta(seconds=20 * i) for i in range(2 * 180 + 30)]  # 2 h 10 min
    for i, at in enumerate(times):
        h.add("c1", at, heartbeat(i, at))
        if i % 9 == 0:  # flushed now and then, as the sweep does
            h.flush(db.session, at)
    h.flush(db.session, times[-1] + timedelta(hours=2))
    for hour in (T0, T0 + timedelta(hours=1)):
        idx = [i for i, at in enumerate(times) if hour <= at < hour + timedelta(hours=1)]
        row = db.rows[("1h", hour)]
        s = [sample(i) for i in idx]
        assert row.n == len(idx) == 180
        assert row.rssi_min == min(x["link"]["rssi_dbm"] for x in s)
        assert row.rssi_avg == round(sum(x["link"]["rssi_dbm"] for x in s) / len(s), 1)
        assert row.amp_temp_max == max(x["amp_temp_c"] for x in s)
        assert row.amp_temp_avg == round(sum(x["amp_temp_c"] for x in s) / len(s), 1)
        assert row.battery_min == min(x["power"]["battery_pct"] for x in s)
        assert row.on_battery_ratio == round(sum(x["power"]["source"] == "battery" for x in s) / len(s), 3)
        assert row.speakers_faulty_max == 1
        assert row.volume_pct == s[-1]["volume_pct"]  # the hour's last sample
    rows = db.rows
    minutes = [k for k in rows if k[0] == "1m"]
    assert len(minutes) == 130 and all(rows[k].n == 3 for k in minutes)
