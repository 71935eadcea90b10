"""Per-area settings, each inherited by everything beneath the area: the health thresholds
(``controller.fleet.thresholds``) and the broadcast policy (``controller.access.policy``).
Reading them is open to any account; changing them takes the role and the area."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from controller.access.jurisdiction import OPERATORS, require_role, require_targets
from controller.access.policy import PolicyPatch, effective_policy
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Area, User
from controller.errors import NotFound
from controller.fleet.thresholds import ThresholdsPatch

if TYPE_CHECKING:
    from controller.fleet.health import HealthTracker

__all__ = ["policy_of", "set_policy", "set_thresholds", "thresholds_of"]


def _area(db: Session, area_id: str) -> Area:
    area = db.get(Area, area_id)
    if area is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return area


def thresholds_of(db: Session, health: HealthTracker, area_id: str) -> dict[str, Any]:
    area = _area(db, area_id)
    return {"area_id": area_id, "override": area.thresholds or {},
            "effective": health.thresholds(db, area_id).model_dump()}


def set_thresholds(db: Session, health: HealthTracker, user: User, area_id: str,
                   patch: ThresholdsPatch) -> dict[str, Any]:
    """Override thresholds for this area and everything beneath it (null clears a field)."""
    area = _area(db, area_id)
    require_role(user, OPERATORS, "change thresholds")
    require_targets(db, user, [area_id], [])
    area.thresholds = {k: v for k, v in patch.model_dump().items() if v is not None} or None
    db.commit()
    health.invalidate_thresholds()
    return thresholds_of(db, health, area_id)


def policy_of(db: Session, area_id: str) -> dict[str, Any]:
    area = _area(db, area_id)
    chain = [db.get(Area, a) for a in reversed(ancestor_ids(db, area_id))]
    return {"area_id": area_id, "override": area.policy or {},
            "effective": effective_policy([a.policy for a in chain if a]).model_dump(mode="json")}


def set_policy(db: Session, user: User, area_id: str, patch: PolicyPatch) -> dict[str, Any]:
    """Replace this area's policy override (it applies here and below)."""
    area = _area(db, area_id)
    require_role(user, ("admin", "leader"), "change the broadcast policy")
    require_targets(db, user, [area_id], [])
    area.policy = {k: v for k, v in patch.model_dump(mode="json").items() if v is not None} or None
    db.commit()
    return policy_of(db, area_id)
