"""The commune's inbox of bulletins from above (accept with a time and villages, or
decline with a reason), and a commune's programme for one day."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.access.jurisdiction import SCHEDULERS, describe, require_role, scope
from controller.api.schemas import Decline, InboxDecision
from controller.broadcasting.programme import commune_map, gather, layout
from controller.broadcasting.recurrence import Recurrence
from controller.broadcasting.service import commit_and_plan, pin_recurrence, refuse_breaches
from controller.broadcasting.states import BroadcastStatus, move
from controller.broadcasting.targeting import descendant_area_ids
from controller.db.models import Area, Broadcast, Cluster, User, utcnow
from controller.errors import Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from controller.runtime import Runtime


def _name(db: Session, area_id: str | None) -> str | None:
    area = db.get(Area, area_id) if area_id else None
    return area.name if area else None


def _item(db: Session, bc: Broadcast) -> dict[str, Any]:
    return {"id": bc.id, "parent_id": bc.parent_id, "title": bc.title, "priority": bc.priority,
            "status": bc.status, "commune_id": bc.commune_id,
            "commune": describe(db, bc.commune_id), "from": describe(db, bc.origin_area_id),
            "origin_area_id": bc.origin_area_id, "from_name": _name(db, bc.origin_area_id),
            "created_by": bc.created_by, "created_at": bc.created_at,
            "suggested_start_at": bc.start_at, "recurrence": bc.recurrence,
            "expires_at": bc.expires_at, "content_id": bc.content_id,
            "duration_s": bc.content.duration_ms / 1000, "targets": bc.targets,
            "decided_by": bc.decided_by, "decided_at": bc.decided_at,
            "decision_note": bc.decision_note}


def inbox_items(db: Session, user: User, status: str = "inbox") -> list[dict[str, Any]]:
    """Bulletins handed down to the communes in the caller's area. ``status=inbox`` (the
    default) lists those waiting for a decision; ``status=all`` the recent ones."""
    q = select(Broadcast).where(Broadcast.parent_id.is_not(None))
    if status != "all":
        q = q.where(Broadcast.status == status)
    allowed = scope(db, user)
    if allowed is not None:
        q = q.where(Broadcast.commune_id.in_(allowed))
    rows = db.scalars(q.order_by(Broadcast.created_at.desc()).limit(500))
    return [_item(db, bc) for bc in rows]


def _inbox_item(db: Session, user: User, item_id: str) -> Broadcast:
    bc = db.get(Broadcast, item_id)
    allowed = scope(db, user)
    if bc is None or bc.parent_id is None or (allowed is not None and bc.commune_id not in allowed):
        raise NotFound("inbox_item_not_found", f"no inbox item {item_id!r} in your area",
                       item=item_id)
    require_role(user, SCHEDULERS, "decide on bulletins from above")
    if bc.status != BroadcastStatus.INBOX:
        raise Conflict("inbox_already_decided", f"this bulletin is already {bc.status}"
                       + (f" by {bc.decided_by}" if bc.decided_by else ""),
                       status=bc.status, by=bc.decided_by)
    return bc


def accept(db: Session, rt: Runtime, user: User, item_id: str,
           req: InboxDecision) -> Broadcast:
    """Schedule a bulletin from above: at the suggested time unless another is given, to
    all the villages the issuer targeted or to the ones chosen here."""
    bc = _inbox_item(db, user, item_id)
    now = utcnow()
    if bc.expires_at is not None and bc.expires_at <= now:
        raise Conflict("inbox_expired", "this bulletin has expired")
    if req.areas is not None:
        inside = descendant_area_ids(db, [bc.commune_id or ""])
        outside = [a for a in req.areas if a not in inside]
        if outside or not req.areas:
            raise Invalid("inbox_areas_outside_commune",
                          f"areas must be villages of {describe(db, bc.commune_id)}"
                          + (f"; not {', '.join(outside)}" if outside else ""),
                          commune=bc.commune_id, outside=list(outside))
        bc.targets = {"areas": list(dict.fromkeys(req.areas)), "clusters": []}
    start, recurrence = req.start_at, bc.recurrence
    if req.recurrence is not None:
        first: datetime | None
        recurrence, first = pin_recurrence(req.recurrence, now)
        start = None
        slots = Recurrence.model_validate(recurrence).upcoming(now, 20)
    else:
        if start is None and recurrence is None:
            start = bc.start_at
        if start is None and recurrence is None:
            raise Invalid("inbox_no_time",
                          "the issuer suggested no time: give start_at or recurrence")
        if recurrence is not None and start is None:
            first = Recurrence.model_validate(recurrence).next_after(now)
            slots = Recurrence.model_validate(recurrence).upcoming(now, 20)
        else:
            recurrence = None
            first = start
            slots = [start]  # type: ignore[list-item]
    if first is None or first < now - timedelta(seconds=1):
        raise Invalid("start_in_past", "the start time is in the past: give a new start_at",
                      start_at=first.isoformat() if first else None, now=now.isoformat())
    if bc.expires_at is not None and bc.expires_at <= first:
        raise Invalid("expires_before_start", f"the bulletin expires at "
                      f"{bc.expires_at.isoformat()}, before that start",
                      expires_at=bc.expires_at.isoformat(), start_at=first.isoformat())
    refuse_breaches(db, rt, bc, slots)
    bc.start_at, bc.recurrence = start, recurrence
    if req.position is not None:
        bc.position = req.position
    move(bc, BroadcastStatus.SCHEDULED)
    bc.decided_by, bc.decided_at = user.username, now
    bc.decision_note = "accepted"
    return commit_and_plan(db, rt, bc)


def decline(db: Session, user: User, item_id: str, req: Decline) -> Broadcast:
    """Decline a normal bulletin from above, with the reason the issuer will see."""
    bc = _inbox_item(db, user, item_id)
    move(bc, BroadcastStatus.DECLINED)
    bc.decided_by, bc.decided_at = user.username, utcnow()
    bc.decision_note = req.reason.strip()
    db.commit()
    db.refresh(bc)
    return bc


def day_programme(db: Session, rt: Runtime, user: User, area: str,
                  day: date | None = None) -> dict[str, Any]:
    """A commune's programme for one local day: every item in the order it will play,
    with the time it starts, and how far the programme moved it from its slot."""
    a = db.get(Area, area)
    allowed = scope(db, user)
    if a is None or (allowed is not None and area not in allowed):
        raise NotFound("area_not_found", f"no area {area!r} in your area", area=area)
    commune = commune_map(db, [area]).get(area)
    if commune is None:
        raise Invalid("area_above_commune", f"{describe(db, area)} is above commune level; "
                      "a programme belongs to one commune", area=area)
    zone = ZoneInfo(rt.settings.timezone)
    day = day or utcnow().astimezone(zone).date()
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = start + timedelta(days=1)
    clusters = set(db.scalars(select(Cluster.id).where(
        Cluster.area_id.in_(descendant_area_ids(db, [area])))))
    gap = timedelta(seconds=rt.settings.programme_gap_s)
    items = [i for i in layout(gather(db, clusters, start, end, now=utcnow()), gap)
             if i.clusters & clusters and start <= i.start < end]  # type: ignore[operator]
    return {
        "area_id": area, "commune_id": commune, "day": day.isoformat(),
        "items": [{"broadcast_id": i.broadcast_id, "title": i.title, "priority": i.priority,
                   "slot": i.slot, "start": i.start, "end": i.end,
                   "moved_s": (i.start - i.slot).total_seconds(),  # type: ignore[operator]
                   "position": i.position, "dispatched": i.fixed,
                   "from": describe(db, i.meta.get("origin")),
                   "clusters": len(i.clusters & clusters)}
                  for i in items]}
