"""Alerts as technicians see them: those of their own area, and acknowledging one.
(The lifecycle itself, opened → cleared → resolved, is :mod:`controller.fleet.alerts`.)"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.access.jurisdiction import OPERATORS, require_role, scope, within
from controller.db.models import Alert, Cluster, User, utcnow
from controller.errors import Conflict, NotFound
from controller.fleet.alerts import WebhookSender

__all__ = ["acknowledge", "visible_alerts"]

def visible_alerts(db: Session, user: User, *, status: str = "open",
                   cluster_id: str | None = None, area_id: str | None = None,
                   code: str | None = None, limit: int = 200) -> list[Alert]:
    """Alerts of the caller's area (its own area's, or its clusters'), newest first."""
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
    return list(db.scalars(q))


def _alert_visible(db: Session, user: User, a: Alert) -> bool:
    """As ``visible_alerts`` filters: the alert's area, or its cluster's, is the user's."""
    if user.area_id is None:
        return True
    return (a.area_id is not None and within(db, user, [a.area_id], [])) or \
        (a.cluster_id is not None and within(db, user, [], [a.cluster_id]))


def acknowledge(db: Session, webhooks: WebhookSender, user: User, alert_id: int) -> Alert:
    """A technician has seen it: recorded once, and said to the webhooks."""
    a = db.get(Alert, alert_id)
    if a is None or not _alert_visible(db, user, a):
        raise NotFound("alert_not_found", f"no alert {alert_id}", alert=alert_id)
    require_role(user, OPERATORS, "acknowledge alerts")
    if a.resolved_at is not None:
        raise Conflict("alert_resolved", "the alert is already resolved", alert=alert_id)
    if a.acknowledged_at is None:
        a.acknowledged_at, a.acknowledged_by = utcnow(), user.username
        db.commit()
        webhooks.emit("acknowledged", a)
    return a
