"""Availability (from state transitions), delivery success (from outcomes) and readiness."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.broadcasting.states import BROADCAST_LIVE, BroadcastStatus, OccurrenceStatus
from controller.broadcasting.targeting import descendant_area_ids
from controller.db.models import Area, Cluster, Delivery, Occurrence, StateTransition
from controller.fleet.health import UP_STATES, state_reason

__all__ = ["availability_report", "periods", "readiness", "uptime_seconds"]

#: airings whose slot has come: sent (and perhaps played), or missed
AIRED = (OccurrenceStatus.SENT, OccurrenceStatus.COMPLETED, OccurrenceStatus.MISSED)


def uptime_seconds(transitions: list[tuple[datetime, str]], start: datetime, end: datetime,
                   state_before: str | None) -> float:
    """Seconds of [start, end) spent up, given the transitions (sorted) and the state at start.

    Time before the first known state counts as down: an unmonitored cluster is not available.
    """
    up = 0.0
    cur_state, cur_t = state_before, start
    for at, state in transitions:
        if at <= start:
            cur_state = state
            continue
        if at >= end:
            break
        if cur_state in UP_STATES:
            up += (at - cur_t).total_seconds()
        cur_state, cur_t = state, at
    if cur_state in UP_STATES:
        up += (end - cur_t).total_seconds()
    return up


def periods(start: datetime, end: datetime, granularity: str, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """Local calendar days or months covering [start, end), clipped to it."""
    out = []
    cur = start.astimezone(zone)
    while cur < end:
        if granularity == "day":
            nxt = (cur.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1))
        else:
            first = cur.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            nxt = (first + timedelta(days=32)).replace(day=1)
        nxt = nxt.replace(tzinfo=zone) if nxt.tzinfo is None else nxt
        out.append((cur, min(nxt, end.astimezone(zone))))
        cur = nxt
    return out


def availability_report(db: Session, area_id: str | None, start: datetime, end: datetime,
                        granularity: str, zone: ZoneInfo) -> dict[str, Any]:
    q = select(Cluster).where(Cluster.provisioned.is_(True))
    if area_id is not None:
        q = q.where(Cluster.area_id.in_(descendant_area_ids(db, [area_id])))
    clusters = list(db.scalars(q.order_by(Cluster.id)))
    ids = [c.id for c in clusters]
    trans: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    if ids:
        for t in db.scalars(select(StateTransition).where(
                StateTransition.cluster_id.in_(ids), StateTransition.at < end)
                .order_by(StateTransition.at)):
            trans[t.cluster_id].append((t.at, t.state))
    delivered: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    spans = periods(start, end, granularity, zone)
    if ids:
        rows = db.execute(
            select(Delivery.cluster_id, Occurrence.start_at, Delivery.state)
            .join(Occurrence).where(Delivery.cluster_id.in_(ids), Occurrence.start_at >= start,
                                    Occurrence.start_at < end,
                                    Occurrence.status.in_(AIRED)))
        for cid, at, state in rows:
            for i, (a, b) in enumerate(spans):
                if a <= at < b:
                    delivered[(cid, i)][0] += 1
                    delivered[(cid, i)][1] += state == "played"
    areas = {a.id: a for a in db.scalars(select(Area))}
    out_periods = []
    for i, (a, b) in enumerate(spans):
        secs = (b - a).total_seconds()
        per_cluster: list[dict[str, Any]] = []
        by_area: dict[str, list[float]] = defaultdict(list)
        for c in clusters:
            up = uptime_seconds(trans.get(c.id, []), a, b, None)
            avail = up / secs if secs else 0.0
            targeted, played = delivered[(c.id, i)]
            per_cluster.append({
                "cluster_id": c.id, "area_id": c.area_id, "availability": round(avail, 5),
                "downtime_s": round(secs - up, 1), "deliveries_targeted": targeted,
                "deliveries_played": played,
                "delivery_success": round(played / targeted, 4) if targeted else None,
            })
            aid: str | None = c.area_id
            seen: set[str] = set()
            while aid is not None and aid not in seen:  # roll up: village, commune, ...
                seen.add(aid)
                by_area[aid].append(avail)
                aid = areas[aid].parent_id if aid in areas else None
        out_periods.append({
            "start": a.isoformat(), "end": b.isoformat(),
            "availability": round(sum(x["availability"] for x in per_cluster) / len(per_cluster), 5)
            if per_cluster else None,
            "areas": [{"area_id": k, "name": areas[k].name, "kind": areas[k].kind,
                       "availability": round(sum(v) / len(v), 5)}
                      for k, v in sorted(by_area.items()) if k in areas],
            "clusters": per_cluster,
        })
    return {"area_id": area_id, "from": start.isoformat(), "to": end.isoformat(),
            "granularity": granularity, "timezone": zone.key, "periods": out_periods}


@dataclass(frozen=True, slots=True)
class ClusterReadiness:
    cluster_id: str
    will_play: bool
    reasons: list[str]
    warnings: list[str]
    #: the same, coded for translation: [{"code", "params"}] (docs/errors.md, readiness)
    problems: list[dict[str, Any]] = field(default_factory=list)
    cautions: list[dict[str, Any]] = field(default_factory=list)


def readiness(db: Session, cluster_ids: list[str]) -> list[ClusterReadiness]:
    """Which of these clusters will not play a slot now, and why."""
    out = []
    rows = {c.id: c for c in db.scalars(select(Cluster).where(Cluster.id.in_(cluster_ids)))}
    for cid in cluster_ids:
        c = rows.get(cid)
        reasons: list[str] = []
        warnings: list[str] = []
        problems: list[dict[str, Any]] = []
        cautions: list[dict[str, Any]] = []
        if c is None:
            reasons.append("not registered")
            problems.append({"code": "not_registered", "params": {}})
        else:
            if c.state not in UP_STATES:
                since = c.state_since.isoformat(timespec="minutes") if c.state_since else "?"
                reasons.append(f"{c.state} since {since}: {state_reason(c.state_reason) or 'no heartbeat'}")
                problems.append({"code": "not_up", "params": {
                    "state": c.state, "since": c.state_since.isoformat() if c.state_since else None,
                    "state_code": c.state_reason}})
            working = [s for s in c.speakers if s.state in ("ok", "unknown")]
            if c.speakers and not working:
                reasons.append("no working speaker: " + ", ".join(
                    f"speaker {s.index} {s.state}" for s in c.speakers))
                problems.append({"code": "no_working_speaker", "params": {
                    "speakers": [{"index": s.index, "state": s.state} for s in c.speakers]}})
            for cause in c.causes or []:
                if not (cause["code"].startswith("speaker_") and not working):
                    warnings.append(cause["message"])
                    cautions.append({"code": cause["code"],
                                     "params": {"subject": cause.get("subject", "")}})
        out.append(ClusterReadiness(cid, not reasons, reasons, warnings, problems, cautions))
    return out


def check_upcoming_slots(db: Session, dispatcher: Any, health: Any, now: datetime) -> int:
    """Open (or clear) a ``slot_at_risk`` alert for each broadcast slot starting within its
    area's readiness lead time whose clusters will not all play it. Returns alerts raised."""
    from controller.broadcasting.targeting import TargetError, resolve
    from controller.db.models import Broadcast

    by_area: dict[str | None, dict[tuple[str, str], str]] = {
        owner[len("area:"):]: {} for owner, code, _ in health.alerts.open_keys()
        if code == "slot_at_risk"}
    statuses = BROADCAST_LIVE | {BroadcastStatus.PENDING_APPROVAL}
    for bc in db.scalars(select(Broadcast).where(Broadcast.status.in_(statuses))):
        area: str | None = bc.target.areas[0] if bc.target.areas else None
        conditions = by_area.setdefault(area, {})
        th = health.thresholds(db, area)
        slot = dispatcher.next_slot(bc, now)
        if slot is None or slot - now > timedelta(minutes=th.readiness_lead_min):
            continue
        if bc.status == BroadcastStatus.PENDING_APPROVAL:
            local = slot.astimezone(ZoneInfo(dispatcher.settings.timezone)).strftime("%H:%M %d/%m")
            conditions[("slot_at_risk", f"{bc.id}@{slot.isoformat()}")] = (
                f"'{bc.title or bc.id[:8]}' at {local} is not approved yet: it will not play "
                f"unless a leader approves it (submitted by {bc.created_by})")
            continue
        try:
            ids = resolve(db, bc.target.areas, bc.target.clusters).cluster_ids
        except TargetError:
            ids = []
        bad = [r for r in readiness(db, ids) if not r.will_play]
        if bad:
            local = slot.astimezone(ZoneInfo(dispatcher.settings.timezone)).strftime("%H:%M %d/%m")
            detail = "; ".join(f"{r.cluster_id}: {r.reasons[0]}" for r in bad[:10])
            conditions[("slot_at_risk", f"{bc.id}@{slot.isoformat()}")] = (
                f"{len(bad)} of {len(ids)} clusters will not play '{bc.title or bc.id[:8]}' "
                f"at {local}: {detail}")
    for area, conditions in by_area.items():
        health.alerts.sync(db, cluster_id=None, area_id=area, conditions=conditions, now=now,
                           hold_s=0, codes=["slot_at_risk"])
    return sum(len(c) for c in by_area.values())
