"""Telemetry history, downsampled in memory into 1-minute and 1-hour buckets.

A bucket is written once it closes (so a heartbeat costs no database write here), with
``flush(force=True)`` at shutdown. Retention: 1-minute buckets 48 hours, 1-hour buckets
90 days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.db.models import TelemetrySample
from devices.messages import SpeakerState, Telemetry

__all__ = ["RESOLUTIONS", "RETENTION", "TelemetryHistory"]

RESOLUTIONS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1)}
RETENTION = {"1m": timedelta(hours=48), "1h": timedelta(days=90)}
_FAULTY = (SpeakerState.OPEN, SpeakerState.SHORT)


def bucket_of(ts: datetime, res: str) -> datetime:
    ts = ts.astimezone(UTC)
    if res == "1m":
        return ts.replace(second=0, microsecond=0)
    return ts.replace(minute=0, second=0, microsecond=0)


def _pick(f: Any, a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else f(a, b)


@dataclass
class _Acc:
    n: int = 0
    rssi_sum: float = 0.0
    rssi_n: int = 0
    rssi_min: float | None = None
    temp_sum: float = 0.0
    temp_max: float | None = None
    battery_min: float | None = None
    on_battery: int = 0
    last: Telemetry | None = None
    faulty_max: int = 0

    def add(self, t: Telemetry) -> None:
        # once per heartbeat: plain comparisons, no min()/max() calls or generators
        self.n += 1
        rssi = t.link.rssi_dbm
        if rssi is not None:
            self.rssi_sum += rssi
            self.rssi_n += 1
            if self.rssi_min is None or rssi < self.rssi_min:
                self.rssi_min = rssi
        temp = t.amp_temp_c
        self.temp_sum += temp
        if self.temp_max is None or temp > self.temp_max:
            self.temp_max = temp
        power = t.power
        b = power.battery_pct
        if b is not None and (self.battery_min is None or b < self.battery_min):
            self.battery_min = b
        if power.source == "battery":
            self.on_battery += 1
        faulty = 0
        for s in t.speakers:
            if s.state in _FAULTY:
                faulty += 1
        self.faulty_max = max(self.faulty_max, faulty)
        self.last = t

    def merge(self, o: _Acc) -> None:
        """Add another bucket's samples (a closed minute into its hour)."""
        self.n += o.n
        self.rssi_sum += o.rssi_sum
        self.rssi_n += o.rssi_n
        self.rssi_min = _pick(min, self.rssi_min, o.rssi_min)
        self.temp_sum += o.temp_sum
        self.temp_max = _pick(max, self.temp_max, o.temp_max)
        self.battery_min = _pick(min, self.battery_min, o.battery_min)
        self.on_battery += o.on_battery
        self.faulty_max = max(self.faulty_max, o.faulty_max)
        self.last = o.last or self.last

    def values(self, cluster_id: str, res: str, bucket: datetime) -> dict[str, Any]:
        last = self.last
        return {
            "cluster_id": cluster_id, "resolution": res, "bucket": bucket, "n": self.n,
            "rssi_avg": round(self.rssi_sum / self.rssi_n, 1) if self.rssi_n else None,
            "rssi_min": self.rssi_min, "amp_temp_avg": round(self.temp_sum / self.n, 1),
            "amp_temp_max": self.temp_max, "battery_min": self.battery_min,
            "on_battery_ratio": round(self.on_battery / self.n, 3),
            "volume_pct": last.volume_pct if last else None,
            "clock_offset_ms": last.clock_offset_ms if last else None,
            "storage_free_kb": last.storage_free_kb if last else None,
            "speakers_faulty_max": self.faulty_max,
        }


def _upsert(db: Session, rows: list[dict[str, Any]]) -> None:
    """The closed buckets in a few statements: INSERT … ON CONFLICT DO UPDATE, 1,000 rows
    each (one ORM merge per bucket was a SELECT and an INSERT each: 10,000 clusters' minutes
    took a third of a core on PostgreSQL)."""
    if not rows:
        return
    table = TelemetrySample.__table__
    name = db.get_bind().dialect.name
    insert: Any
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # (another database: one merge per row)
        for r in rows:
            db.merge(TelemetrySample(**r))
        return
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["cluster_id", "resolution", "bucket"],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key})
    for i in range(0, len(rows), 1000):
        db.execute(stmt, rows[i:i + 1000])


class TelemetryHistory:
    def __init__(self) -> None:
        self._acc: dict[tuple[str, str, datetime], _Acc] = {}
        self._minute = self._minute_end = datetime.min.replace(tzinfo=UTC)  # current bucket

    def add(self, cluster_id: str, at: datetime, telemetry: Telemetry) -> None:
        """Into the minute's bucket only; a minute is folded into its hour when it closes."""
        minute = self._minute
        if not minute <= at < self._minute_end:  # heartbeats come in time order: seldom
            minute = self._minute = bucket_of(at, "1m")
            self._minute_end = minute + RESOLUTIONS["1m"]
        key = (cluster_id, "1m", minute)
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = _Acc()
        acc.add(telemetry)

    def flush(self, db: Session, now: datetime, force: bool = False) -> int:
        """Write closed buckets (all with ``force``); returns rows written. Minutes go
        first, each folded into its hour, so an hour closing now has all its minutes."""
        rows: list[dict[str, Any]] = []
        for res in ("1m", "1h"):
            done = [k for k in self._acc
                    if k[1] == res and (force or k[2] + RESOLUTIONS[res] <= now)]
            for key in done:
                cluster_id, _, bucket = key
                acc = self._acc.pop(key)
                if res == "1m":
                    hour = (cluster_id, "1h", bucket.replace(minute=0))
                    self._acc.setdefault(hour, _Acc()).merge(acc)
                rows.append(acc.values(cluster_id, res, bucket))
        _upsert(db, rows)  # a bucket re-opened after a forced flush is overwritten
        return len(rows)

    @staticmethod
    def prune(db: Session, now: datetime) -> None:
        for res, keep in RETENTION.items():
            db.execute(delete(TelemetrySample).where(TelemetrySample.resolution == res,
                                                     TelemetrySample.bucket < now - keep))

    @staticmethod
    def query(db: Session, cluster_id: str, start: datetime, end: datetime,
              resolution: str) -> list[TelemetrySample]:
        return list(db.scalars(
            select(TelemetrySample).where(
                TelemetrySample.cluster_id == cluster_id, TelemetrySample.resolution == resolution,
                TelemetrySample.bucket >= bucket_of(start, resolution), TelemetrySample.bucket < end)
            .order_by(TelemetrySample.bucket)))
