"""Alerts: the open and resolved ones, and acknowledging one (:mod:`controller.fleet.alert_service`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as FPath

from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.fleet.alert_service import acknowledge, visible_alerts
from controller.fleet.alerts import alert_dict

router = APIRouter(tags=["alerts"])


@router.get("/alerts")
def list_alerts(db: SessionDep, user: CurrentUser, rt: RuntimeDep,
                status: Literal["open", "resolved", "all"] = "open",
                cluster_id: str | None = None, area_id: str | None = None,
                code: str | None = None,
                limit: Annotated[int, Query(ge=1, le=2000)] = 200) -> list[dict[str, Any]]:
    out = [alert_dict(a) for a in visible_alerts(db, user, status=status, cluster_id=cluster_id,
                                                 area_id=area_id, code=code, limit=limit)]
    # the controller's own storage alert lives in memory while the database fails
    storage = rt.storage.alert()
    if storage is not None and status != "resolved" and cluster_id is None and \
            area_id is None and code in (None, storage.code):
        out.insert(0, alert_dict(storage))
    return out


@router.post("/alerts/{alert_id}/ack")
def ack_alert(alert_id: Annotated[int, FPath(ge=1, le=2**63 - 1)], db: SessionDep,
              rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    return alert_dict(acknowledge(db, rt.webhooks, user, alert_id))
