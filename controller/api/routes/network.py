"""The network as data: areas, boards (register, adopt, retire), speakers, unregistered
devices, and the whole tree as a file (controller.fleet.network)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from controller.access.jurisdiction import require_role, visible_cluster
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.routes.areas import _cluster_out
from controller.api.schemas import AreaOut, ClusterOut
from controller.fleet import network
from controller.fleet.network import AreaCreate, AreaPatch, ClusterRegister, SpeakerIn

router = APIRouter(tags=["network"])


def _area_out(a: Any) -> AreaOut:
    return AreaOut(id=a.id, name=a.name, kind=a.kind, parent_id=a.parent_id, lat=a.lat,
                   lon=a.lon)


@router.post("/areas", status_code=201, response_model=AreaOut)
def create_area(req: AreaCreate, db: SessionDep, user: CurrentUser) -> AreaOut:
    """A new area (a village, say) under one of one's own area."""
    return _area_out(network.create_area(db, user, req))


@router.patch("/areas/{area_id}", response_model=AreaOut)
def update_area(area_id: str, req: AreaPatch, db: SessionDep, user: CurrentUser) -> AreaOut:
    """Rename, move (``parent_id``) or place (``lat``, ``lon``) an area."""
    return _area_out(network.update_area(db, user, area_id, req))


@router.delete("/areas/{area_id}", status_code=204)
def retire_area(area_id: str, db: SessionDep, user: CurrentUser) -> Response:
    """Retire an area that holds no area and no board any more (409 ``area_in_use``)."""
    network.retire_area(db, user, area_id)
    return Response(status_code=204)


@router.post("/clusters", status_code=201, response_model=ClusterOut)
def register_cluster(req: ClusterRegister, db: SessionDep, user: CurrentUser) -> ClusterOut:
    """Register a board into a village, with its coordinates and speakers; a board that
    announced itself unregistered is adopted. Then issue its credential:
    ``POST /clusters/{id}/credentials`` (its bundle)."""
    return _cluster_out(network.register_cluster(db, user, req))


@router.put("/clusters/{cluster_id}/speakers", response_model=ClusterOut)
def set_speakers(cluster_id: str, speakers: list[SpeakerIn], db: SessionDep,
                 user: CurrentUser) -> ClusterOut:
    """The board's speakers, as installed (added, renamed, removed)."""
    c = visible_cluster(db, user, cluster_id)
    require_role(user, network.NETWORK_EDITORS, "change boards")
    network.set_speakers(c, speakers)
    db.commit()
    return _cluster_out(c)


@router.delete("/clusters/{cluster_id}", status_code=204)
def retire_cluster(cluster_id: str, db: SessionDep, rt: RuntimeDep,
                   user: CurrentUser) -> Response:
    """Retire a board: its credential is revoked (the broker refuses it from its next
    connection), it is never targeted again, its history stays."""
    visible_cluster(db, user, cluster_id)
    network.retire_cluster(db, user, cluster_id)
    rt.broker.sync(db)
    return Response(status_code=204)


@router.get("/devices/unregistered", response_model=list[ClusterOut])
def unregistered(db: SessionDep, user: CurrentUser) -> list[ClusterOut]:
    """Boards that connected but are not registered (at most 500 are kept): adopt one with
    ``POST /clusters``, or dismiss it."""
    return [_cluster_out(c) for c in network.unregistered(db, user)]


@router.delete("/devices/unregistered/{device_id}", status_code=204)
def dismiss(device_id: str, db: SessionDep, user: CurrentUser) -> Response:
    network.dismiss_device(db, user, device_id)
    return Response(status_code=204)


@router.get("/network")
def export(db: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The whole registered network in the import format (``loa network import``)."""
    return network.export_network(db, user)
