from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.schemas import BroadcastCreate, BroadcastOut, DeliveryOut, OccurrenceOut
from controller.db.models import Area, Broadcast, Cluster, Content, Occurrence, utcnow
from controller.jurisdiction import (
    SCHEDULERS,
    can_see,
    describe,
    require_cancel,
    require_role,
    require_targets,
)
from controller.policy import effective_policy, violations
from controller.recurrence import Recurrence, RecurrenceError
from controller.targeting import TargetError, ancestor_ids, resolve

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])


def _occ_out(o: Occurrence) -> OccurrenceOut:
    starts = [d.started_at for d in o.deliveries if d.started_at is not None]
    spread = (max(starts) - min(starts)).total_seconds() * 1000 if len(starts) > 1 else None
    return OccurrenceOut(id=o.id, scheduled_at=o.scheduled_at, start_at=o.start_at,
                         status=o.status, summary=dict(Counter(d.state for d in o.deliveries)),
                         start_spread_ms=spread)


def _out(bc: Broadcast, rt: RuntimeDep, full: bool = True) -> BroadcastOut:
    latest = bc.occurrences[-1] if bc.occurrences else None
    slots = []
    if bc.status in ("scheduled", "active"):
        cur = utcnow()
        for _ in range(5):
            nxt = rt.dispatcher.next_slot(bc, cur)
            if nxt is None:
                break
            slots.append(nxt)
            cur = nxt
    return BroadcastOut(
        id=bc.id, title=bc.title, status=bc.status, priority=bc.priority,
        content_id=bc.content_id, targets=bc.targets, start_at=bc.start_at,
        recurrence=bc.recurrence, expires_at=bc.expires_at, created_at=bc.created_at,
        created_by=bc.created_by, origin_area_id=bc.origin_area_id, next_slots=slots,
        occurrence=_occ_out(latest) if latest else None,
        deliveries=[DeliveryOut(cluster_id=d.cluster_id, state=d.state, started_at=d.started_at,
                                finished_at=d.finished_at, error=d.error, updated_at=d.updated_at)
                    for d in latest.deliveries] if latest and full else [],
        occurrences=[_occ_out(o) for o in bc.occurrences[-50:]] if full else [],
    )


@router.post("", response_model=BroadcastOut, status_code=201)
def create(req: BroadcastCreate, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> BroadcastOut:
    """Schedule a broadcast. An emergency without start_at plays at once everywhere in its
    targets, preempting anything and ignoring quiet hours."""
    return _out(schedule(req, db, rt, user), rt)


def schedule(req: BroadcastCreate, db: SessionDep, rt: RuntimeDep, user: CurrentUser,
             cap_ref: str | None = None) -> Broadcast:
    """Validate everything, then store and plan (or, for an emergency now, dispatch) it.
    Raises HTTPException (403/422) before anything is stored."""
    now = utcnow()
    require_role(user, SCHEDULERS, "schedule broadcasts")
    content = db.get(Content, req.content_id)
    if content is None:
        raise HTTPException(422, f"unknown content_id {req.content_id!r}")
    require_targets(db, user, req.targets.areas, req.targets.clusters)  # 403 before anything
    try:
        resolved = resolve(db, req.targets.areas, req.targets.clusters)
    except TargetError as exc:
        raise HTTPException(422, str(exc)) from None
    recurrence = None
    immediate = req.priority == "emergency" and req.start_at is None and req.recurrence is None
    if immediate:
        req = req.model_copy(update={"start_at": now + timedelta(
            seconds=rt.settings.emergency_lead_s)})
    first = req.start_at
    if req.start_at is not None and req.start_at < now - timedelta(seconds=1):
        raise HTTPException(422, f"start_at {req.start_at.isoformat()} is in the past "
                                 f"(server time {now.isoformat(timespec='seconds')})")
    if req.recurrence is not None:
        rec = req.recurrence
        if rec.dtstart is None:  # pin the rule's anchor so INTERVAL/COUNT stay stable
            rec = rec.model_copy(update={"dtstart": now.astimezone(rec.zone).replace(
                second=0, microsecond=0, tzinfo=None)})
        try:
            first = rec.validate_future(now)
        except RecurrenceError as exc:
            raise HTTPException(422, str(exc)) from None
        recurrence = rec.model_dump(mode="json")
    assert first is not None
    if req.expires_at is not None and req.expires_at <= first:
        raise HTTPException(422, "expires_at must be after the first start")
    if req.priority != "emergency":
        slots = [first]
        if req.recurrence is not None:
            slots = Recurrence.model_validate(recurrence).upcoming(now, 20) or [first]
        problems = policy_violations(db, rt, resolved.cluster_ids, slots,
                                     content.duration_ms / 1000)
        if problems:
            raise HTTPException(422, "refused by the broadcast policy: " + "; ".join(problems))
    bc = Broadcast(id=uuid.uuid4().hex, title=req.title, content_id=content.id,
                   priority=req.priority, targets=req.targets.model_dump(), start_at=req.start_at,
                   recurrence=recurrence, expires_at=req.expires_at, status="scheduled",
                   created_by=user.username, origin_area_id=user.area_id, cap_ref=cap_ref)
    db.add(bc)
    db.commit()
    if immediate:  # no scheduler hop: sign and publish now (the occurrence is unique anyway)
        rt.dispatcher.dispatch(bc.id, bc.start_at)  # type: ignore[arg-type]
    else:
        rt.scheduler.plan(bc)
    db.refresh(bc)
    return bc


def policy_violations(db: SessionDep, rt: RuntimeDep, cluster_ids: list[str],
                      slots: list[datetime], duration_s: float) -> list[str]:
    """Quiet hours and programme length of every area the item would play in."""
    zone = ZoneInfo(rt.settings.timezone)
    areas = set(db.scalars(select(Cluster.area_id).where(Cluster.id.in_(cluster_ids))))
    problems: list[str] = []
    for area_id in sorted(a for a in areas if a):
        chain = [db.get(Area, a) for a in reversed(ancestor_ids(db, area_id))]
        pol = effective_policy([a.policy for a in chain if a is not None])
        name = describe(db, area_id)
        for slot in slots:
            for v in violations(pol, name, slot, duration_s, zone):
                if v not in problems:
                    problems.append(v)
        if len(problems) >= 5:
            break
    return problems


@router.get("", response_model=list[BroadcastOut])
def list_broadcasts(db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                    limit: int = 50) -> list[BroadcastOut]:
    """Broadcasts the caller may see: its own area's, and those from above that reach it."""
    out: list[BroadcastOut] = []
    q = select(Broadcast).order_by(Broadcast.created_at.desc())
    for bc in db.scalars(q.limit(2000)):
        if can_see(db, user, bc):
            out.append(_out(bc, rt, full=False))
            if len(out) >= min(limit, 500):
                break
    return out


@router.get("/{broadcast_id}", response_model=BroadcastOut)
def get_broadcast(broadcast_id: str, db: SessionDep, rt: RuntimeDep,
                  user: CurrentUser) -> BroadcastOut:
    bc = db.get(Broadcast, broadcast_id)
    if bc is None or not can_see(db, user, bc):
        raise HTTPException(404, f"no broadcast {broadcast_id!r} in your area")
    return _out(bc, rt)


@router.post("/{broadcast_id}/cancel", response_model=BroadcastOut)
def cancel(broadcast_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> BroadcastOut:
    """Stop it everywhere within seconds (clusters drop it, or stop it if playing)."""
    bc = db.get(Broadcast, broadcast_id)
    if bc is None or not can_see(db, user, bc):
        raise HTTPException(404, f"no broadcast {broadcast_id!r} in your area")
    require_role(user, SCHEDULERS, "cancel broadcasts")
    require_cancel(db, user, bc)
    if bc.status in ("cancelled", "completed"):
        raise HTTPException(409, f"broadcast is already {bc.status}")
    rt.scheduler.unplan(bc.id)
    for attempt in range(3):  # PostgreSQL may pick this transaction as a deadlock victim
        try:
            rt.dispatcher.cancel(db, bc)
            break
        except OperationalError:
            db.rollback()
            if attempt == 2:
                raise
            bc = db.get(Broadcast, broadcast_id)  # type: ignore[assignment]
    db.refresh(bc)
    return _out(bc, rt)
