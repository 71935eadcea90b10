"""Per-area settings that apply to the area and below: health thresholds and the
broadcast policy (quiet hours, volume caps, programme slots and length)
(:mod:`controller.access.area_settings`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.access import area_settings
from controller.access.jurisdiction import visible_area
from controller.access.policy import PolicyPatch
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.fleet.thresholds import Thresholds, ThresholdsPatch

router = APIRouter(tags=["policy"])


@router.get("/areas/{area_id}/thresholds")
def get_thresholds(area_id: str, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> dict[str, Any]:
    """An area's own thresholds and the effective ones (one's area, beneath, or above)."""
    visible_area(db, user, area_id)
    return area_settings.thresholds_of(db, rt.health, area_id)


@router.put("/areas/{area_id}/thresholds")
def put_thresholds(area_id: str, patch: ThresholdsPatch, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> dict[str, Any]:
    """Override thresholds for this area and everything beneath it (null clears a field)."""
    return area_settings.set_thresholds(db, rt.health, user, area_id, patch)


@router.get("/areas/{area_id}/policy")
def get_policy(area_id: str, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """An area's own policy and the effective one (one's area, beneath, or above)."""
    visible_area(db, user, area_id)
    return area_settings.policy_of(db, area_id)


@router.put("/areas/{area_id}/policy")
def put_policy(area_id: str, patch: PolicyPatch, db: SessionDep,
               user: CurrentUser) -> dict[str, Any]:
    """Replace this area's policy override (it applies here and below): quiet hours,
    the longest programme item, volume caps by time of day, programme slots."""
    return area_settings.set_policy(db, user, area_id, patch)


@router.get("/thresholds/defaults")
def default_thresholds(_user: CurrentUser) -> dict[str, Any]:
    return Thresholds().model_dump()
