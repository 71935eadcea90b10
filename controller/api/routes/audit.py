"""The audit log (admins and leaders, their own area)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response

from controller.access import audit
from controller.api.deps import CurrentUser, SessionDep

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=None)
def audit_log(db: SessionDep, user: CurrentUser, username: str | None = None,
              action: str | None = None, since: datetime | None = None,
              until: datetime | None = None, limit: int = 200, offset: int = 0,
              format: Literal["json", "csv"] = "json") -> list[dict[str, Any]] | Response:
    """Who did what, when, from where: newest first. ``action`` matches part of the action
    (``cancel``, ``login_failed``, ``/policy``); ``?format=csv`` for a spreadsheet."""
    rows = audit.entries(db, user, username=username, action=action, since=since,
                         until=until, limit=max(1, limit), offset=max(0, offset))
    if format == "csv":
        return Response(audit.as_csv(rows), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="audit.csv"'})
    return [audit.as_dict(e) for e in rows]
