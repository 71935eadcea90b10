"""The audit log: who did what, when, from where, and how it ended.

Every request that changes something (``POST``, ``PUT``, ``PATCH``, ``DELETE`` under
``/api/v1``) is recorded by one middleware (:func:`controller.app.create_app`) with the
acting account, its role and area, the client address, the route (``POST
/api/v1/broadcasts/{broadcast_id}/cancel``), the ids in the path and the HTTP status, so a
refused attempt is there too. Logins and failed logins are recorded by the login route.
Entries are only ever appended: no API changes or deletes them.

An admin or a leader reads the entries of accounts in its own area (a national admin: all),
filtered by account, action, time, as JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.access.jurisdiction import require_role, scope
from controller.db.models import AuditEntry, User, utcnow

log = logging.getLogger(__name__)

__all__ = ["AUDITORS", "as_csv", "as_dict", "entries", "record"]

AUDITORS = ("admin", "leader")
FIELDS = ["at", "username", "role", "area_id", "client", "action", "target", "status",
          "detail"]


def record(sessions: sessionmaker[Session], *, action: str, username: str | None = None,
           role: str | None = None, area_id: str | None = None, client: str | None = None,
           target: str | None = None, status: int | None = None,
           detail: dict[str, Any] | None = None) -> None:
    try:
        with sessions() as db:
            db.add(AuditEntry(at=utcnow(), username=username, role=role, area_id=area_id,
                              client=client, action=action[:200],
                              target=target[:200] if target else None, status=status,
                              detail=detail))
            db.commit()
    except Exception:  # the request's own outcome stands; the gap is in the log
        log.exception("audit entry not written: %s %s %s", username, action, target)


def entries(db: Session, user: User, *, username: str | None = None,
            action: str | None = None, since: datetime | None = None,
            until: datetime | None = None, limit: int = 200, offset: int = 0
            ) -> list[AuditEntry]:
    require_role(user, AUDITORS, "read the audit log")
    q = select(AuditEntry)
    allowed = scope(db, user)
    if allowed is not None:  # entries of accounts acting within one's own area
        q = q.where(AuditEntry.area_id.in_(allowed))
    if username:
        q = q.where(AuditEntry.username == username)
    if action:
        q = q.where(AuditEntry.action.contains(action, autoescape=True))
    if since is not None:
        q = q.where(AuditEntry.at >= since)
    if until is not None:
        q = q.where(AuditEntry.at < until)
    q = q.order_by(AuditEntry.id.desc()).limit(min(limit, 5000)).offset(offset)
    return list(db.scalars(q))


def as_dict(e: AuditEntry) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "username": e.username, "role": e.role,
            "area_id": e.area_id, "client": e.client, "action": e.action, "target": e.target,
            "status": e.status, "detail": e.detail}


def as_csv(rows: list[AuditEntry]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for e in rows:
        d = as_dict(e)
        w.writerow({k: d[k] for k in FIELDS})
    return buf.getvalue()
