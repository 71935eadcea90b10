from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from controller.access.jurisdiction import scope, visible_cluster
from controller.api.deps import CurrentUser, SessionDep
from controller.api.schemas import AreaOut, ClusterOut, SpeakerOut
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Area, Cluster
from controller.fleet.health import STATE_REASONS, state_reason

router = APIRouter(tags=["areas"])


@router.get("/areas", response_model=list[AreaOut])
def list_areas(db: SessionDep, user: CurrentUser) -> list[AreaOut]:
    """The caller's area, everything beneath it, and its ancestors."""
    allowed = scope(db, user)
    q = select(Area).order_by(Area.id)
    if allowed is not None:
        q = q.where(Area.id.in_(allowed | set(ancestor_ids(db, user.area_id))))
    return [AreaOut(id=a.id, name=a.name, kind=a.kind, parent_id=a.parent_id, lat=a.lat,
                    lon=a.lon) for a in db.scalars(q)]


def _cluster_out(c: Cluster) -> ClusterOut:
    return ClusterOut(
        id=c.id, area_id=c.area_id, name=c.name, state=c.state, state_since=c.state_since,
        state_code=c.state_reason if c.state_reason in STATE_REASONS else None,
        state_reason=state_reason(c.state_reason), causes=c.causes, provisioned=c.provisioned, last_seen=c.last_seen,
        firmware=c.firmware, lat=c.lat, lon=c.lon, telemetry=c.telemetry,
        speakers=[SpeakerOut(index=s.index, name=s.name, state=s.state) for s in c.speakers],
    )


@router.get("/clusters", response_model=list[ClusterOut])
def list_clusters(db: SessionDep, user: CurrentUser, state: str | None = None,
                  area_id: str | None = None) -> list[ClusterOut]:
    q = select(Cluster).options(selectinload(Cluster.speakers)).order_by(Cluster.id)
    allowed = scope(db, user)
    if allowed is not None:
        q = q.where(Cluster.area_id.in_(allowed))
    if state:
        q = q.where(Cluster.state == state)
    if area_id:
        q = q.where(Cluster.area_id == area_id)
    return [_cluster_out(c) for c in db.scalars(q)]


@router.get("/clusters/{cluster_id}", response_model=ClusterOut)
def get_cluster(cluster_id: str, db: SessionDep, user: CurrentUser) -> ClusterOut:
    return _cluster_out(visible_cluster(db, user, cluster_id))
