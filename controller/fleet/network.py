"""The network as data: areas, clusters (boards) and their speakers, changed through the API
and ``loa network import|export`` instead of by hand.

* An **area** is created under a parent in one's area, renamed, moved, or retired (only
  when nothing hangs under it).
* A **cluster** is registered into a village (with its coordinates and speakers), which also
  *adopts* a board that announced itself unregistered; **replaced** (a new board in the same
  place: a new credential and bundle, the old one refused; its history and schedules stay,
  since they belong to the cluster, not to the board); **retired** (its credential revoked,
  never targeted again, its history kept).
* **Unregistered devices** (a board that connected but is not in the registry) are listed
  and can be dismissed; the controller keeps at most ``MAX_UNREGISTERED`` of them.

Every change needs an admin or a technician of the area, and rewrites the broker's files
(:class:`controller.fleet.provisioning.BrokerSync`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from controller.access.broker_auth import revoke_credential
from controller.access.jurisdiction import describe, require_role, scope
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Alert, Area, Cluster, Speaker, User, utcnow
from controller.errors import Conflict, Forbidden, Invalid, NotFound
from controller.fleet.health import MAX_UNREGISTERED
from devices.areas import Network
from devices.topics import ID_PATTERN

__all__ = ["AreaCreate", "AreaPatch", "ClusterRegister", "NetworkFile", "SpeakerIn",
           "create_area", "dismiss_device", "export_network", "import_network",
           "register_cluster", "retire_area", "retire_cluster", "update_area"]

NETWORK_EDITORS = ("admin", "technician")


class SpeakerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=1, le=64)
    name: str = Field("", max_length=100)
    watts: int = Field(30, ge=1, le=2000)


class AreaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["province", "district", "commune", "village"]
    parent_id: str | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class AreaPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    parent_id: str | None = Field(None, description="move it under another area")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class ClusterRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID_PATTERN, description="the board's id (its MQTT username)")
    area_id: str = Field(description="the village (or other leaf area) it stands in")
    name: str = Field("", max_length=200)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    speakers: list[SpeakerIn] = Field(default_factory=list, max_length=64)


class NetworkFile(BaseModel):
    """``loa network import|export``: a commune's (or a province's) whole tree."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("network", max_length=200)
    areas: list[AreaCreate] = Field(max_length=100_000)
    clusters: list[ClusterRegister] = Field(max_length=200_000)


def _editor(db: Session, user: User, area_id: str | None, what: str) -> None:
    require_role(user, NETWORK_EDITORS, what)
    allowed = scope(db, user)
    if allowed is not None and (area_id is None or area_id not in allowed):
        raise Forbidden("area_outside_jurisdiction", f"{user.username} acts for "
                        f"{describe(db, user.area_id)} and cannot change "
                        f"{describe(db, area_id)}", user=user.username, home=user.area_id,
                        area=area_id)


def _area(db: Session, area_id: str) -> Area:
    a = db.get(Area, area_id)
    if a is None:
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return a


def create_area(db: Session, user: User, req: AreaCreate) -> Area:
    if req.parent_id is not None:
        _area(db, req.parent_id)
    _editor(db, user, req.parent_id, "change the network")
    if db.get(Area, req.id) is not None:
        raise Conflict("area_exists", f"area {req.id!r} exists", area=req.id)
    a = Area(id=req.id, name=req.name, kind=req.kind, parent_id=req.parent_id, lat=req.lat,
             lon=req.lon)
    db.add(a)
    db.commit()
    return a


def update_area(db: Session, user: User, area_id: str, req: AreaPatch) -> Area:
    a = _area(db, area_id)
    _editor(db, user, area_id, "change the network")
    if req.parent_id is not None and req.parent_id != a.parent_id:
        _area(db, req.parent_id)
        _editor(db, user, req.parent_id, "change the network")
        cur: str | None = req.parent_id
        while cur is not None:  # not under itself
            if cur == area_id:
                raise Invalid("area_cycle", f"{area_id} cannot move under its own descendant "
                              f"{req.parent_id}", area=area_id, parent=req.parent_id)
            cur = db.scalar(select(Area.parent_id).where(Area.id == cur))
        a.parent_id = req.parent_id
    for f in ("name", "lat", "lon"):
        v = getattr(req, f)
        if v is not None:
            setattr(a, f, v)
    db.commit()
    return a


def retire_area(db: Session, user: User, area_id: str) -> None:
    a = _area(db, area_id)
    _editor(db, user, a.parent_id if a.parent_id else area_id, "change the network")
    children = db.scalar(select(func.count()).select_from(Area).where(Area.parent_id == area_id))
    clusters = db.scalar(select(func.count()).select_from(Cluster).where(
        Cluster.area_id == area_id, Cluster.retired_at.is_(None)))
    if children or clusters:
        raise Conflict("area_in_use", f"{a.name} still holds {children} area(s) and "
                       f"{clusters} cluster(s): move or retire them first", area=area_id,
                       areas=children, clusters=clusters)
    for c in db.scalars(select(Cluster).where(Cluster.area_id == area_id)):
        c.area_id = None  # retired boards keep their history, not a place
    db.delete(a)
    db.commit()


def register_cluster(db: Session, user: User, req: ClusterRegister) -> Cluster:
    """Register a board into a village, or adopt one that announced itself unregistered.
    Its broker credential is issued separately (its bundle)."""
    _area(db, req.area_id)
    _editor(db, user, req.area_id, "register boards")
    c = db.get(Cluster, req.id)
    if c is not None and c.provisioned:
        raise Conflict("cluster_exists", f"cluster {req.id} is registered already (in "
                       f"{describe(db, c.area_id)})", cluster=req.id, area=c.area_id)
    if c is None:
        c = Cluster(id=req.id, state="offline", state_since=utcnow())
        db.add(c)
    else:  # adopted: it was unregistered (or retired, and comes back)
        c.state, c.state_since, c.retired_at = "offline", utcnow(), None
        _resolve_device_alerts(db, c.id)
    c.area_id, c.name, c.lat, c.lon, c.provisioned = (req.area_id, req.name or req.id, req.lat,
                                                       req.lon, True)
    set_speakers(c, req.speakers)
    db.commit()
    return c


def set_speakers(c: Cluster, speakers: list[SpeakerIn]) -> None:
    have = {s.index: s for s in c.speakers}
    for s in speakers:
        if s.index in have:
            have[s.index].name, have[s.index].watts = s.name, s.watts
        else:
            c.speakers.append(Speaker(index=s.index, name=s.name, watts=s.watts))
    wanted = {s.index for s in speakers}
    for idx, spk in have.items():
        if idx not in wanted:
            c.speakers.remove(spk)


def retire_cluster(db: Session, user: User, cluster_id: str) -> Cluster:
    c = db.get(Cluster, cluster_id)
    if c is None or c.retired_at is not None:
        raise NotFound("cluster_not_found", f"no cluster {cluster_id!r}", cluster=cluster_id)
    _editor(db, user, c.area_id, "retire boards")
    revoke_credential(c)
    c.provisioned, c.retired_at = False, utcnow()
    c.state, c.state_since = "retired", utcnow()
    _resolve_device_alerts(db, c.id)
    db.commit()
    return c


def _resolve_device_alerts(db: Session, cluster_id: str) -> None:
    now = utcnow()
    for a in db.scalars(select(Alert).where(Alert.cluster_id == cluster_id,
                                            Alert.resolved_at.is_(None))):
        a.resolved_at = a.cleared_at = now


def unregistered(db: Session, user: User) -> list[Cluster]:
    require_role(user, NETWORK_EDITORS, "see unregistered devices")
    return list(db.scalars(select(Cluster).where(Cluster.provisioned.is_(False),
                                                 Cluster.retired_at.is_(None))
                           .order_by(Cluster.last_seen.desc()).limit(MAX_UNREGISTERED)))


def dismiss_device(db: Session, user: User, device_id: str) -> None:
    """Forget a device that announced itself and was never registered."""
    require_role(user, ("admin",) if scope(db, user) is not None else NETWORK_EDITORS,
                 "dismiss unregistered devices")
    c = db.get(Cluster, device_id)
    if c is None or c.provisioned or c.retired_at is not None:
        raise NotFound("device_not_found", f"no unregistered device {device_id!r}",
                       device=device_id)
    _resolve_device_alerts(db, device_id)
    db.execute(delete(Speaker).where(Speaker.cluster_id == device_id))
    db.delete(c)
    db.commit()


def export_network(db: Session, user: User, name: str = "network") -> dict[str, Any]:
    """The caller's area (with its ancestors, so the file stands alone) and every
    registered cluster in it, parents first, in the import format."""
    require_role(user, ("admin",), "export the network")
    allowed = scope(db, user)
    areas = list(db.scalars(select(Area)))
    if allowed is not None:
        keep = allowed | set(ancestor_ids(db, user.area_id))
        areas = [a for a in areas if a.id in keep]
    parent = {a.id: a.parent_id for a in areas}

    def depth(a: Area) -> int:
        d, cur = 0, a.parent_id
        while cur is not None and d < 64:
            d, cur = d + 1, parent.get(cur)
        return d

    q = select(Cluster).where(Cluster.provisioned.is_(True)).order_by(Cluster.id)
    if allowed is not None:
        q = q.where(Cluster.area_id.in_(allowed))
    clusters = db.scalars(q)
    return NetworkFile(name=name, areas=[
        AreaCreate(id=a.id, name=a.name, kind=a.kind, parent_id=a.parent_id,  # type: ignore[arg-type]
                   lat=a.lat, lon=a.lon) for a in sorted(areas, key=lambda a: (depth(a), a.id))],
        clusters=[ClusterRegister(id=c.id, area_id=c.area_id or "", name=c.name, lat=c.lat,
                                  lon=c.lon, speakers=[SpeakerIn(index=s.index, name=s.name,
                                                                 watts=s.watts)
                                                       for s in c.speakers])
                  for c in clusters]).model_dump(mode="json")


def import_network(data: NetworkFile) -> Network:
    """Check a network file whole (ids, kinds, every parent and village present), for
    :func:`controller.db.seed.register_network` to insert or update."""
    try:
        return Network.from_dict(data.model_dump(mode="json"))
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid("network_invalid", f"the network file is not consistent: {exc}",
                      detail=str(exc)[:300]) from None
