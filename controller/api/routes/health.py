"""Technicians: telemetry history, alerts, remote actions, thresholds, reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi import Path as FPath
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select

from controller.access.jurisdiction import (
    OPERATORS,
    can_see,
    require_role,
    require_targets,
    scope,
    visible_cluster,
    within,
)
from controller.access.policy import PolicyPatch, effective_policy
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.broadcasting.reports import availability_report, readiness
from controller.broadcasting.targeting import ancestor_ids, resolve
from controller.db.models import Action, Alert, Area, Broadcast, Cluster, utcnow
from controller.errors import Conflict, Invalid, NotFound
from controller.fleet.alerts import alert_dict
from controller.fleet.history import RESOLUTIONS, RETENTION, TelemetryHistory
from controller.fleet.thresholds import Thresholds, ThresholdsPatch

router = APIRouter(tags=["health"])


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["set_volume", "set_speaker", "reboot", "self_test", "report_now",
                  "set_heartbeat"]
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="set_volume {volume_pct}; set_speaker {index, "
                                               "muted}; set_heartbeat {heartbeat_s}")


def _action_out(a: Action) -> dict[str, Any]:
    states: dict[str, int] = {}
    for r in a.results:
        states[r.state] = states.get(r.state, 0) + 1
    return {"id": a.id, "kind": a.kind, "params": a.params, "targets": a.targets,
            "requested_by": a.requested_by, "requested_at": a.requested_at.isoformat(),
            "summary": states,
            "results": [{"cluster_id": r.cluster_id, "state": r.state, "result": r.result,
                         "reason": r.reason, "updated_at": r.updated_at.isoformat()}
                        for r in a.results]}


def _create_action(rt: RuntimeDep, db: SessionDep, user: CurrentUser, req: ActionRequest,
                   areas: list[str], clusters: list[str]) -> dict[str, Any]:
    require_role(user, OPERATORS, "act on clusters")
    require_targets(db, user, areas, clusters)
    action = rt.actions.create(db, kind=req.kind, params=req.params, areas=areas,
                               clusters=clusters, user=user.username)
    return _action_out(action)


@router.post("/clusters/{cluster_id}/actions", status_code=202)
def cluster_action(cluster_id: str, req: ActionRequest, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> dict[str, Any]:
    """Send a signed remote action to one cluster; poll GET /actions/{id} for the outcome."""
    if db.get(Cluster, cluster_id) is None:
        raise NotFound("cluster_not_found", f"no cluster {cluster_id!r}", cluster=cluster_id)
    return _create_action(rt, db, user, req, [], [cluster_id])


@router.post("/areas/{area_id}/actions", status_code=202)
def area_action(area_id: str, req: ActionRequest, db: SessionDep, rt: RuntimeDep,
                user: CurrentUser) -> dict[str, Any]:
    """One signed publish to every cluster beneath the area (e.g. set_volume)."""
    if db.get(Area, area_id) is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return _create_action(rt, db, user, req, [area_id], [])


@router.get("/actions/{action_id}")
def get_action(action_id: str, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    a = db.get(Action, action_id)
    if a is None or not within(db, user, a.targets.get("areas", []),
                               a.targets.get("clusters", [])):
        raise NotFound("action_not_found", f"no action {action_id!r}", action=action_id)
    return _action_out(a)


@router.get("/clusters/{cluster_id}/telemetry")
def telemetry_history(cluster_id: str, db: SessionDep, user: CurrentUser,
                      from_: AwareDatetime | None = Query(None, alias="from"),
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


@router.get("/alerts")
def list_alerts(db: SessionDep, user: CurrentUser,
                status: Literal["open", "resolved", "all"] = "open",
                cluster_id: str | None = None, area_id: str | None = None,
                code: str | None = None, limit: int = Query(200, ge=1, le=2000)) -> list[dict[str, Any]]:
    q = select(Alert).order_by(Alert.opened_at.desc()).limit(limit)
    if status == "open":
        q = q.where(Alert.resolved_at.is_(None))
    elif status == "resolved":
        q = q.where(Alert.resolved_at.is_not(None))
    if cluster_id:
        q = q.where(Alert.cluster_id == cluster_id)
    if area_id:
        q = q.where(Alert.area_id == area_id)
    if code:
        q = q.where(Alert.code == code)
    allowed = scope(db, user)
    if allowed is not None:
        in_area = select(Cluster.id).where(Cluster.area_id.in_(allowed))
        q = q.where(Alert.cluster_id.in_(in_area) | Alert.area_id.in_(allowed))
    return [alert_dict(a) for a in db.scalars(q)]


def _alert_visible(db: SessionDep, user: CurrentUser, a: Alert) -> bool:
    """As GET /alerts filters: the alert's area, or its cluster's, is the user's."""
    if user.area_id is None:
        return True
    return (a.area_id is not None and within(db, user, [a.area_id], [])) or \
        (a.cluster_id is not None and within(db, user, [], [a.cluster_id]))


@router.post("/alerts/{alert_id}/ack")
def ack_alert(alert_id: Annotated[int, FPath(ge=1, le=2**63 - 1)], db: SessionDep,
              rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    a = db.get(Alert, alert_id)
    if a is None or not _alert_visible(db, user, a):
        raise NotFound("alert_not_found", f"no alert {alert_id}", alert=alert_id)
    require_role(user, OPERATORS, "acknowledge alerts")
    if a.resolved_at is not None:
        raise Conflict("alert_resolved", "the alert is already resolved", alert=alert_id)
    if a.acknowledged_at is None:
        a.acknowledged_at, a.acknowledged_by = utcnow(), user.username
        db.commit()
        rt.webhooks.emit("acknowledged", a)
    return alert_dict(a)


@router.get("/areas/{area_id}/thresholds")
def get_thresholds(area_id: str, db: SessionDep, rt: RuntimeDep,
                   _user: CurrentUser) -> dict[str, Any]:
    area = db.get(Area, area_id)
    if area is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return {"area_id": area_id, "override": area.thresholds or {},
            "effective": rt.health.thresholds(db, area_id).model_dump()}


@router.put("/areas/{area_id}/thresholds")
def put_thresholds(area_id: str, patch: ThresholdsPatch, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> dict[str, Any]:
    """Override thresholds for this area and everything beneath it (null clears a field)."""
    area = db.get(Area, area_id)
    if area is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    require_role(user, OPERATORS, "change thresholds")
    require_targets(db, user, [area_id], [])
    area.thresholds = {k: v for k, v in patch.model_dump().items() if v is not None} or None
    db.commit()
    rt.health.invalidate_thresholds()
    return {"area_id": area_id, "override": area.thresholds or {},
            "effective": rt.health.thresholds(db, area_id).model_dump()}


@router.get("/reports/availability")
def availability(db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                 area_id: str | None = None,
                 from_: AwareDatetime | None = Query(None, alias="from"),
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
    ids = resolve(db, bc.targets.get("areas", []), bc.targets.get("clusters", [])).cluster_ids
    allowed = scope(db, user)
    if allowed is not None:  # a bulletin from above: the clusters of the user's own area
        ids = list(db.scalars(select(Cluster.id).where(
            Cluster.id.in_(ids), Cluster.area_id.in_(allowed)).order_by(Cluster.id)))
    rows = readiness(db, ids)
    return {"broadcast_id": bc.id, "slot": slot.isoformat() if slot else None,
            "will_play": sum(r.will_play for r in rows), "targeted": len(rows),
            "clusters": [{"cluster_id": r.cluster_id, "will_play": r.will_play,
                          "reasons": r.reasons, "warnings": r.warnings} for r in rows]}


@router.get("/areas/{area_id}/policy")
def get_policy(area_id: str, db: SessionDep, _user: CurrentUser) -> dict[str, Any]:
    if db.get(Area, area_id) is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    chain = [db.get(Area, a) for a in reversed(ancestor_ids(db, area_id))]
    return {"area_id": area_id, "override": db.get(Area, area_id).policy or {},  # type: ignore[union-attr]
            "effective": effective_policy([a.policy for a in chain if a]).model_dump(mode="json")}


@router.put("/areas/{area_id}/policy")
def put_policy(area_id: str, patch: PolicyPatch, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Replace this area's policy override (it applies here and below): quiet hours,
    the longest programme item, volume caps by time of day, programme slots."""
    area = db.get(Area, area_id)
    if area is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    require_role(user, ("admin", "leader"), "change the broadcast policy")
    require_targets(db, user, [area_id], [])
    area.policy = {k: v for k, v in patch.model_dump(mode="json").items() if v is not None} or None
    db.commit()
    return get_policy(area_id, db, user)


@router.get("/thresholds/defaults")
def default_thresholds(_user: CurrentUser) -> dict[str, Any]:
    return Thresholds().model_dump()
