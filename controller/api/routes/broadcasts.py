from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.schemas import BroadcastCreate, BroadcastOut, DeliveryOut, OccurrenceOut
from controller.db.models import Broadcast, Content, Occurrence, utcnow
from controller.recurrence import RecurrenceError
from controller.targeting import TargetError, resolve

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
        created_by=bc.created_by, next_slots=slots,
        occurrence=_occ_out(latest) if latest else None,
        deliveries=[DeliveryOut(cluster_id=d.cluster_id, state=d.state, started_at=d.started_at,
                                finished_at=d.finished_at, error=d.error, updated_at=d.updated_at)
                    for d in latest.deliveries] if latest and full else [],
        occurrences=[_occ_out(o) for o in bc.occurrences[-50:]] if full else [],
    )


@router.post("", response_model=BroadcastOut, status_code=201)
def create(req: BroadcastCreate, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> BroadcastOut:
    now = utcnow()
    content = db.get(Content, req.content_id)
    if content is None:
        raise HTTPException(422, f"unknown content_id {req.content_id!r}")
    try:
        resolve(db, req.targets.areas, req.targets.clusters)
    except TargetError as exc:
        raise HTTPException(422, str(exc)) from None
    recurrence = None
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
    bc = Broadcast(id=uuid.uuid4().hex, title=req.title, content_id=content.id,
                   priority=req.priority, targets=req.targets.model_dump(), start_at=req.start_at,
                   recurrence=recurrence, expires_at=req.expires_at, status="scheduled",
                   created_by=user.username)
    db.add(bc)
    db.commit()
    rt.scheduler.plan(bc)
    db.refresh(bc)
    return _out(bc, rt)


@router.get("", response_model=list[BroadcastOut])
def list_broadcasts(db: SessionDep, rt: RuntimeDep, _user: CurrentUser,
                    limit: int = 50) -> list[BroadcastOut]:
    rows = db.scalars(select(Broadcast).order_by(Broadcast.created_at.desc()).limit(min(limit, 500)))
    return [_out(bc, rt, full=False) for bc in rows]


@router.get("/{broadcast_id}", response_model=BroadcastOut)
def get_broadcast(broadcast_id: str, db: SessionDep, rt: RuntimeDep,
                  _user: CurrentUser) -> BroadcastOut:
    bc = db.get(Broadcast, broadcast_id)
    if bc is None:
        raise HTTPException(404, f"no broadcast {broadcast_id!r}")
    return _out(bc, rt)


@router.post("/{broadcast_id}/cancel", response_model=BroadcastOut)
def cancel(broadcast_id: str, db: SessionDep, rt: RuntimeDep, _user: CurrentUser) -> BroadcastOut:
    bc = db.get(Broadcast, broadcast_id)
    if bc is None:
        raise HTTPException(404, f"no broadcast {broadcast_id!r}")
    if bc.status in ("cancelled", "completed"):
        raise HTTPException(409, f"broadcast is already {bc.status}")
    rt.scheduler.unplan(bc.id)
    rt.dispatcher.cancel(db, bc)
    db.refresh(bc)
    return _out(bc, rt)
