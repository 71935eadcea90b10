"""Who may do what where: every account belongs to an area (none = national) and a role.

An account acts only within its area's subtree: it can target, see and cancel there. It
sees bulletins from above that reach its area, but cannot cancel them. Refusals are 403s
that say why.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.broadcasting.targeting import ancestor_ids, descendant_area_ids
from controller.db.models import Area, Broadcast, Cluster, Content, User
from controller.errors import Forbidden, NotFound

__all__ = [
    "ROLES",
    "can_see",
    "describe",
    "require_cancel",
    "require_role",
    "require_targets",
    "scope",
    "visible_area",
    "visible_cluster",
    "visible_content",
    "within",
]

ROLES = {
    "admin": "manages accounts, schedules, acts on clusters",
    "leader": "schedules and approves bulletins",
    "officer": "schedules bulletins",
    "technician": "watches health and acts on clusters",
}
SCHEDULERS = ("admin", "leader", "officer")
APPROVERS = ("admin", "leader")
OPERATORS = ("admin", "leader", "technician")


def describe(db: Session, area_id: str | None) -> str:
    if area_id is None:
        return "the whole country"
    a = db.get(Area, area_id)
    return f"{a.kind} {a.name}" if a else area_id


def scope(db: Session, user: User) -> set[str] | None:
    """Area ids the user may act on; None means everywhere."""
    if user.area_id is None:
        return None
    return descendant_area_ids(db, [user.area_id])


def require_role(user: User, allowed: tuple[str, ...], what: str) -> None:
    if user.role not in allowed:
        raise Forbidden("role_not_allowed", f"{user.username} is a {user.role}; only "
                        f"{', '.join(allowed)} may {what}", user=user.username,
                        role=user.role, allowed=list(allowed), action=what)


def require_targets(db: Session, user: User, areas: list[str], clusters: list[str]) -> None:
    allowed = scope(db, user)
    if allowed is None:
        return
    home = describe(db, user.area_id)
    for a in areas:
        if a not in allowed:
            raise Forbidden("area_outside_jurisdiction",
                            f"{user.username} acts for {home} and cannot target "
                            f"{describe(db, a)} ({a}): it is outside that area",
                            user=user.username, home=user.area_id, area=a)
    if clusters:
        rows = db.execute(select(Cluster.id, Cluster.area_id).where(Cluster.id.in_(clusters)))
        for cid, area in rows:
            if area not in allowed:
                raise Forbidden("cluster_outside_jurisdiction",
                                f"{user.username} acts for {home} and cannot target "
                                f"cluster {cid}: it is outside that area",
                                user=user.username, home=user.area_id, cluster=cid)


def within(db: Session, user: User, areas: list[str], clusters: list[str]) -> bool:
    """Whether every area and cluster given lies in the user's area (reads: a record about
    anything outside it is answered as not found, so its existence does not leak)."""
    allowed = scope(db, user)
    if allowed is None:
        return True
    if any(a not in allowed for a in areas):
        return False
    if clusters:
        found = db.scalars(select(Cluster.area_id).where(Cluster.id.in_(clusters))).all()
        if len(found) < len(set(clusters)) or any(a not in allowed for a in found):
            return False  # an unknown cluster is nobody's but the country's
    return True


def visible_cluster(db: Session, user: User, cluster_id: str) -> Cluster:
    """The cluster, or 404 when it does not exist or lies outside the user's area."""
    c = db.get(Cluster, cluster_id)
    allowed = scope(db, user)
    if c is None or (allowed is not None and c.area_id not in allowed):
        raise NotFound("cluster_not_found", f"no cluster {cluster_id!r}", cluster=cluster_id)
    return c


def visible_content(db: Session, user: User, content_id: str) -> Content:
    """A recording or a text's speech, or 404: visible to accounts of the area its author
    acts for (and everyone above), and to whoever can see a broadcast that plays it (a
    bulletin from above is heard below)."""
    c = db.get(Content, content_id)
    allowed = scope(db, user)
    if c is not None and allowed is not None:
        author = db.get(User, c.created_by) if c.created_by else None
        if author is None or author.area_id not in allowed:
            plays = db.scalars(select(Broadcast).where(Broadcast.content_id == c.id).limit(50))
            if not any(can_see(db, user, bc) for bc in plays):
                c = None
    if c is None:
        raise NotFound("content_not_found", f"no content {content_id!r}", content=content_id)
    return c


def visible_area(db: Session, user: User, area_id: str) -> Area:
    """An area within one's own, or one of its ancestors (whose settings apply to it); 404
    for any other, so that another commune's settings do not leak."""
    a = db.get(Area, area_id)
    allowed = scope(db, user)
    if a is None or (allowed is not None and area_id not in allowed
                     and area_id not in ancestor_ids(db, user.area_id)):
        raise NotFound("area_not_found", f"no area {area_id!r}", area=area_id)
    return a


def can_see(db: Session, user: User, bc: Broadcast) -> bool:
    allowed = scope(db, user)
    if allowed is None:
        return True
    if bc.origin_area_id in allowed:
        return True
    reach = allowed | set(ancestor_ids(db, user.area_id))  # bulletins from above reach us
    if any(a in reach for a in bc.target.areas):
        return True
    clusters = bc.target.clusters
    if clusters:
        areas = set(db.scalars(select(Cluster.area_id).where(Cluster.id.in_(clusters))))
        return bool(areas & allowed)
    return False


def require_cancel(db: Session, user: User, bc: Broadcast) -> None:
    allowed = scope(db, user)
    if allowed is None:
        return
    if bc.parent_id is not None and bc.priority == "normal" and bc.commune_id in allowed:
        return  # a normal bulletin handed down is the commune's to schedule or drop
    if bc.origin_area_id is None or bc.origin_area_id not in allowed:
        raise Forbidden("cancel_not_allowed", f"this {bc.priority} bulletin was issued by "
                        f"{describe(db, bc.origin_area_id)}; {user.username} "
                        f"({describe(db, user.area_id)}) cannot cancel it",
                        priority=bc.priority, origin=bc.origin_area_id, user=user.username)
