"""Per-area settings that apply to the area and below: health thresholds and the
broadcast policy (quiet hours, volume caps, programme slots and length)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.access.jurisdiction import (
    OPERATORS,
    require_role,
    require_targets,
)
from controller.access.policy import PolicyPatch, effective_policy
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Area
from controller.errors import NotFound
from controller.fleet.thresholds import Thresholds, ThresholdsPatch

router = APIRouter(tags=["policy"])


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
