"""Remote actions on clusters (volume, mute a speaker, reboot, self-test, report now,
heartbeat period) and their per-cluster outcome."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from controller.access.jurisdiction import (
    OPERATORS,
    require_role,
    require_targets,
    within,
)
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.db.models import Action, Area, Cluster
from controller.errors import NotFound

router = APIRouter(tags=["actions"])


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["set_volume", "set_speaker", "reboot", "self_test", "report_now",
                  "set_heartbeat"]
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="set_volume {volume_pct}; set_speaker {index, "
                                               "muted}; set_heartbeat {heartbeat_s}")


def _action_out(a: Action) -> dict[str, Any]:
    states: dict[str, int] = {}
    for r in a.results:
        states[r.state] = states.get(r.state, 0) + 1
    return {"id": a.id, "kind": a.kind, "params": a.params, "targets": a.targets,
            "requested_by": a.requested_by, "requested_at": a.requested_at.isoformat(),
            "summary": states,
            "results": [{"cluster_id": r.cluster_id, "state": r.state, "result": r.result,
                         "reason": r.reason, "updated_at": r.updated_at.isoformat()}
                        for r in a.results]}


def _create_action(rt: RuntimeDep, db: SessionDep, user: CurrentUser, req: ActionRequest,
                   areas: list[str], clusters: list[str]) -> dict[str, Any]:
    require_role(user, OPERATORS, "act on clusters")
    require_targets(db, user, areas, clusters)
    action = rt.actions.create(db, kind=req.kind, params=req.params, areas=areas,
                               clusters=clusters, user=user.username)
    return _action_out(action)


@router.post("/clusters/{cluster_id}/actions", status_code=202)
def cluster_action(cluster_id: str, req: ActionRequest, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> dict[str, Any]:
    """Send a signed remote action to one cluster; poll GET /actions/{id} for the outcome."""
    if db.get(Cluster, cluster_id) is None:
        raise NotFound("cluster_not_found", f"no cluster {cluster_id!r}", cluster=cluster_id)
    return _create_action(rt, db, user, req, [], [cluster_id])


@router.post("/areas/{area_id}/actions", status_code=202)
def area_action(area_id: str, req: ActionRequest, db: SessionDep, rt: RuntimeDep,
                user: CurrentUser) -> dict[str, Any]:
    """One signed publish to every cluster beneath the area (e.g. set_volume)."""
    if db.get(Area, area_id) is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return _create_action(rt, db, user, req, [area_id], [])


@router.get("/actions/{action_id}")
def get_action(action_id: str, db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    a = db.get(Action, action_id)
    if a is None or not within(db, user, a.target.areas,
                               a.target.clusters):
        raise NotFound("action_not_found", f"no action {action_id!r}", action=action_id)
    return _action_out(a)
