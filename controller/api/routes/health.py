"""Technicians' views: telemetry history for charts, availability reports, and a
broadcast's readiness before its slot."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from sqlalchemy import select

from controller.access.jurisdiction import (
    can_see,
    scope,
    visible_cluster,
    within,
)
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.broadcasting.targeting import resolve
from controller.db.models import Area, Broadcast, Cluster, utcnow
from controller.errors import Invalid, NotFound
from controller.fleet.availability import availability_report, readiness
from controller.fleet.history import RESOLUTIONS, RETENTION, TelemetryHistory

router = APIRouter(tags=["health"])


@router.get("/clusters/{cluster_id}/telemetry")
def telemetry_history(cluster_id: str, db: SessionDep, user: CurrentUser,
                      from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                      to: AwareDatetime | None = None,
                      resolution: Literal["auto", "1m", "1h"] = "auto") -> dict[str, Any]:
    """Downsampled telemetry for charts: 1-minute points (48 h kept), 1-hour (90 days)."""
    visible_cluster(db, user, cluster_id)
    end = to or utcnow()
    start = from_ or end - timedelta(hours=6)
    if start >= end:
        raise Invalid("range_inverted", "from must be before to")
    if resolution == "auto":
        resolution = "1m" if end - start <= RETENTION["1m"] else "1h"
    rows = TelemetryHistory.query(db, cluster_id, start, end, resolution)
    fields = ("n", "rssi_avg", "rssi_min", "amp_temp_avg", "amp_temp_max", "battery_min",
              "on_battery_ratio", "volume_pct", "clock_offset_ms", "storage_free_kb",
              "speakers_faulty_max")
    return {"cluster_id": cluster_id, "resolution": resolution,
            "bucket_s": RESOLUTIONS[resolution].total_seconds(),
            "from": start.isoformat(), "to": end.isoformat(),
            "points": [{"t": r.bucket.isoformat(), **{f: getattr(r, f) for f in fields}}
                       for r in rows]}


@router.get("/reports/availability")
def availability(db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                 area_id: str | None = None,
                 from_: Annotated[AwareDatetime | None, Query(alias="from")] = None,
                 to: AwareDatetime | None = None,
                 granularity: Literal["day", "month"] = "day") -> dict[str, Any]:
    """Uptime (online or degraded) per cluster and area, and delivery success (played /
    targeted), per local day or month."""
    zone = ZoneInfo(rt.settings.timezone)
    end = to or utcnow()
    if from_ is None:
        local = end.astimezone(zone)
        from_ = local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=6)
    if from_ >= end:
        raise Invalid("range_inverted", "from must be before to")
    if end - from_ > timedelta(days=400):
        raise Invalid("range_too_long", "at most 400 days per report", max_days=400)
    if area_id is None:
        area_id = user.area_id  # an account's report is of its own area
    if area_id is not None and (db.get(Area, area_id) is None or
                                not within(db, user, [area_id], [])):
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return availability_report(db, area_id, from_, end, granularity, zone)


@router.get("/broadcasts/{broadcast_id}/readiness")
def broadcast_readiness(broadcast_id: str, db: SessionDep, rt: RuntimeDep,
                        user: CurrentUser) -> dict[str, Any]:
    """Which targeted clusters will not play the next slot, and why."""
    bc = db.get(Broadcast, broadcast_id)
    if bc is None or not can_see(db, user, bc):
        raise NotFound("broadcast_not_found", f"no broadcast {broadcast_id!r}",
                       broadcast=broadcast_id)
    slot = rt.dispatcher.next_slot(bc, utcnow())
    ids = resolve(db, bc.target.areas, bc.target.clusters).cluster_ids
    allowed = scope(db, user)
    if allowed is not None:  # a bulletin from above: the clusters of the user's own area
        ids = list(db.scalars(select(Cluster.id).where(
            Cluster.id.in_(ids), Cluster.area_id.in_(allowed)).order_by(Cluster.id)))
    rows = readiness(db, ids)
    return {"broadcast_id": bc.id, "slot": slot.isoformat() if slot else None,
            "will_play": sum(r.will_play for r in rows), "targeted": len(rows),
            "clusters": [{"cluster_id": r.cluster_id, "will_play": r.will_play,
                          "reasons": r.reasons, "warnings": r.warnings,
                          "problems": r.problems, "cautions": r.cautions} for r in rows]}
