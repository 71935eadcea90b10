"""The commune's inbox of bulletins from above, and its programme for a day
(:mod:`controller.broadcasting.inbox`)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder

from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.schemas import BroadcastOut, Decline, InboxDecision
from controller.api.views import broadcast_out
from controller.broadcasting import inbox as service

router = APIRouter(tags=["inbox"])


@router.get("/inbox")
def inbox(db: SessionDep, user: CurrentUser, status: str = "inbox") -> list[dict[str, Any]]:
    """Bulletins handed down to the communes in the caller's area. ``status=inbox`` (the
    default) lists those waiting for a decision; ``status=all`` the recent ones."""
    return jsonable_encoder(service.inbox_items(db, user, status))


@router.post("/inbox/{item_id}/accept", response_model=BroadcastOut)
def accept(item_id: str, req: InboxDecision, db: SessionDep, rt: RuntimeDep,
           user: CurrentUser) -> BroadcastOut:
    """Schedule a bulletin from above: at the suggested time unless another is given, to
    all the villages the issuer targeted or to the ones chosen here."""
    return broadcast_out(service.accept(db, rt, user, item_id, req), rt)


@router.post("/inbox/{item_id}/decline", response_model=BroadcastOut)
def decline(item_id: str, req: Decline, db: SessionDep, rt: RuntimeDep,
            user: CurrentUser) -> BroadcastOut:
    """Decline a normal bulletin from above, with the reason the issuer will see."""
    return broadcast_out(service.decline(db, user, item_id, req), rt)


@router.get("/programme")
def programme(area: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser,
              day: date | None = None) -> dict[str, Any]:
    """A commune's programme for one local day: every item in the order it will play,
    with the time it starts, and how far the programme moved it from its slot."""
    return jsonable_encoder(service.day_programme(db, rt, user, area, day))
