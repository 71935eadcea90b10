"""Broadcasts: schedule, preview, list, show, cancel, update, reorder, approve, reject.
Each route parses, calls one service function (:mod:`controller.broadcasting.service`)
and returns a response model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder

from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.schemas import (
    Approval,
    BroadcastCreate,
    BroadcastOut,
    ContentUpdate,
    Decline,
    PositionSet,
)
from controller.api.views import DELIVERIES_PAGE, broadcast_out, occurrence_stats
from controller.broadcasting import service

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])


@router.post("", response_model=BroadcastOut, status_code=201)
def create(req: BroadcastCreate, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> BroadcastOut:
    """Schedule a broadcast. An emergency without start_at plays at once everywhere in its
    targets, preempting anything and ignoring quiet hours. A normal or priority bulletin
    from a province or district account is handed to each target commune (normal: its
    inbox; priority: its next programme, ahead of local items)."""
    return broadcast_out(service.schedule(req, db, rt, user), rt)


@router.post("/preview")
def preview_broadcast(req: BroadcastCreate, db: SessionDep, rt: RuntimeDep,
                      user: CurrentUser) -> dict[str, Any]:
    """Conflict preview, before scheduling: what the item would collide with in each
    target commune and how it will be resolved (who plays first, who moves, what an
    emergency preempts), and whether the policy would refuse it. Nothing is stored."""
    return jsonable_encoder(service.preview_broadcast(req, db, rt, user))


@router.get("", response_model=list[BroadcastOut])
def list_broadcasts(db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                    limit: int = 50) -> list[BroadcastOut]:
    """Broadcasts the caller may see: its own area's, and those from above that reach it."""
    shown = service.visible_broadcasts(db, user, limit)
    stats = occurrence_stats(db, [bc.occurrences[-1].id for bc in shown if bc.occurrences])
    return [broadcast_out(bc, rt, full=False, stats=stats) for bc in shown]


@router.get("/{broadcast_id}", response_model=BroadcastOut)
def get_broadcast(broadcast_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser,
                  deliveries_limit: Annotated[int, Query(ge=0, le=5000)] = DELIVERIES_PAGE,
                  deliveries_offset: Annotated[int, Query(ge=0)] = 0) -> BroadcastOut:
    """One broadcast, its latest occurrences and one page of its deliveries (by cluster id;
    ``deliveries_total`` says how many; ``deliveries_limit=0`` for none: the roll-up per
    area is ``/report``)."""
    return broadcast_out(service.find_visible(db, user, broadcast_id), rt,
                         deliveries_limit=deliveries_limit, deliveries_offset=deliveries_offset)


@router.post("/{broadcast_id}/cancel", response_model=BroadcastOut)
def cancel(broadcast_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> BroadcastOut:
    """Stop it everywhere within seconds (clusters drop it, or stop it if playing). A
    bulletin handed down is cancelled in every commune's inbox and programme."""
    return broadcast_out(service.cancel(db, rt, user, broadcast_id), rt)


@router.post("/{broadcast_id}/update", response_model=BroadcastOut)
def update_content(broadcast_id: str, req: ContentUpdate, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> BroadcastOut:
    """Replace its content wherever it has not played yet: later slots, every commune's
    copy, and every cluster that has not started the current airing (a cluster already
    playing it finishes the old version)."""
    return broadcast_out(service.update_content(db, rt, user, broadcast_id, req), rt)


@router.post("/{broadcast_id}/position", response_model=BroadcastOut)
def set_position(broadcast_id: str, req: PositionSet, db: SessionDep, rt: RuntimeDep,
                 user: CurrentUser) -> BroadcastOut:
    """Reorder within a programme slot: among items of the same priority, lower positions
    play first. A commune may reorder a priority bulletin from above among its priority
    items, but cannot move it behind normal items or drop it."""
    return broadcast_out(service.set_position(db, rt, user, broadcast_id, req), rt)


@router.post("/{broadcast_id}/approve", response_model=BroadcastOut)
def approve(broadcast_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser,
            req: Approval | None = None) -> BroadcastOut:
    """A leader approves an officer's bulletin; it is then planned like any other. Its
    start must still be ahead (policy is checked again: it may have changed meanwhile).
    Send ``content_id``, the content listened to: if the officer changed it since, the
    approval is refused (409 ``approval_stale``)."""
    return broadcast_out(service.approve(db, rt, user, broadcast_id,
                                         req.content_id if req else None), rt)


@router.post("/{broadcast_id}/reject", response_model=BroadcastOut)
def reject(broadcast_id: str, req: Decline, db: SessionDep, rt: RuntimeDep,
           user: CurrentUser) -> BroadcastOut:
    """A leader sends an officer's bulletin back, with the reason; it never airs."""
    return broadcast_out(service.reject(db, rt, user, broadcast_id, req), rt)
