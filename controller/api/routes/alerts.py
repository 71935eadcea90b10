"""Alerts: the open and resolved ones, and acknowledging one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as FPath
from sqlalchemy import select

from controller.access.jurisdiction import (
    OPERATORS,
    require_role,
    scope,
    within,
)
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.db.models import Alert, Cluster, utcnow
from controller.errors import Conflict, NotFound
from controller.fleet.alerts import alert_dict

router = APIRouter(tags=["alerts"])


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
