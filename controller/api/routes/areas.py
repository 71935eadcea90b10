from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from controller.access.jurisdiction import scope, visible_cluster
from controller.api.deps import CurrentUser, SessionDep
from controller.api.schemas import AreaOut, ClusterOut, SpeakerOut
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Area, Cluster
from controller.fleet import listing
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
def list_clusters(db: SessionDep, user: CurrentUser, response: Response,
                  state: str | None = None, area_id: str | None = None,
                  q: Annotated[str | None, Query(max_length=100)] = None,
                  problem: str | None = None,
                  order: Literal["id", "state"] = "id",
                  limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                  offset: Annotated[int, Query(ge=0)] = 0) -> list[ClusterOut]:
    """Clusters of one's area: ``area_id`` (that area and everything beneath it), ``state``,
    ``problem`` (a cause code), ``q`` (in the id or name, accents ignored); ``order=state``
    puts the broken first. One page (``limit``, at most 1,000; ``offset``);
    ``X-Total-Count`` says how many match."""
    total, rows = listing.page(db, user, listing.ClusterFilter(state, area_id, q, problem),
                               order=order, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [_cluster_out(c) for c in rows]


@router.get("/fleet")
def fleet(db: SessionDep, user: CurrentUser, state: str | None = None,
          area_id: str | None = None, q: Annotated[str | None, Query(max_length=100)] = None,
          problem: str | None = None, provisioned: bool | None = None,
          limit: Annotated[int, Query(ge=1, le=500)] = 50,
          offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """The technician's view in one answer: the summary of one's area (clusters by state,
    speakers working, the areas and causes present, for the filters) and one page of the
    filtered clusters, the broken first (``provisioned=true``: registered boards only)."""
    total, rows = listing.page(db, user,
                               listing.ClusterFilter(state, area_id, q, problem, provisioned),
                               order="state", limit=limit, offset=offset)
    return {"summary": listing.summary(db, user), "total": total, "offset": offset,
            "items": [_cluster_out(c).model_dump(mode="json") for c in rows]}


@router.get("/clusters/{cluster_id}", response_model=ClusterOut)
def get_cluster(cluster_id: str, db: SessionDep, user: CurrentUser) -> ClusterOut:
    return _cluster_out(visible_cluster(db, user, cluster_id))
