"""Targets → clusters and the minimal set of command topics that reach them.

A broadcast to an area is one publish on that area's topic; explicitly listed clusters not
already inside a targeted area get their own topic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import Area, Cluster
from controller.errors import Invalid
from controller.fleet.health import UP_STATES
from devices import topics

__all__ = ["Resolved", "TargetError", "ancestor_ids", "descendant_area_ids", "resolve"]


class TargetError(Invalid, ValueError):
    """Targets that name nothing we can play on."""


@dataclass(frozen=True, slots=True)
class Resolved:
    cluster_ids: list[str]
    topics: list[str]
    #: the areas whose command topics are in ``topics`` (none beneath another)
    areas: tuple[str, ...] = ()
    #: the areas the clusters are registered in
    cluster_areas: frozenset[str | None] = frozenset()
    #: the clusters that were neither online nor degraded when resolved
    offline: frozenset[str] = frozenset()


def _subtree(roots: list[str]) -> Any:
    tree = select(Area.id).where(Area.id.in_(roots)).cte("tree", recursive=True)
    return tree.union_all(select(Area.id).where(Area.parent_id == tree.c.id))


def descendant_area_ids(db: Session, roots: Iterable[str]) -> set[str]:
    roots = list(roots)
    if not roots:
        return set()
    return set(db.scalars(select(_subtree(roots).c.id)))


def ancestor_ids(db: Session, area_id: str | None) -> list[str]:
    out: list[str] = []
    while area_id is not None and area_id not in out:
        out.append(area_id)
        area_id = db.scalar(select(Area.parent_id).where(Area.id == area_id))
    return out


def resolve(db: Session, area_ids: list[str], cluster_ids: list[str]) -> Resolved:
    """Raise TargetError naming unknown areas/clusters or an empty target."""
    area_ids = list(dict.fromkeys(area_ids))
    cluster_ids = list(dict.fromkeys(cluster_ids))
    known_areas = set(db.scalars(select(Area.id).where(Area.id.in_(area_ids)))) if area_ids else set()
    unknown = [a for a in area_ids if a not in known_areas]
    if unknown:
        raise TargetError("target_area_unknown", f"unknown area(s): {', '.join(unknown)}",
                          areas=list(unknown))
    rows = db.execute(select(Cluster.id, Cluster.area_id, Cluster.provisioned, Cluster.state)
                      .where(Cluster.id.in_(cluster_ids))).all() if cluster_ids else []
    by_id = {r.id: r for r in rows}
    unknown = [c for c in cluster_ids if c not in by_id or not by_id[c].provisioned]
    if unknown:
        raise TargetError("target_cluster_unknown", f"unknown cluster(s): {', '.join(unknown)}",
                          clusters=list(unknown))
    # drop areas beneath another targeted area: the ancestor's one publish reaches them
    top_areas = [a for a in area_ids
                 if not any(p in known_areas for p in ancestor_ids(db, a)[1:])]
    # (the subtree in the query, not its thousands of ids as parameters: a province's
    # ~10,000 areas cost 0.5 s to bind)
    covered = db.execute(select(Cluster.id, Cluster.area_id, Cluster.state).where(
        Cluster.area_id.in_(select(_subtree(area_ids).c.id)),
        Cluster.provisioned.is_(True))).all() if area_ids else []
    # a cluster named on its own is sent its own command unless an area covers it already
    # (named clusters are provisioned: an area's subtree holds it exactly when it is here)
    covered_ids = {r.id for r in covered}
    extra = [by_id[c] for c in cluster_ids if c not in covered_ids]
    area_of = {r.id: r.area_id for r in covered} | {r.id: r.area_id for r in extra}
    if not area_of:
        raise TargetError("target_empty", "the targets contain no clusters")
    offline = frozenset(r.id for r in (*covered, *extra) if r.state not in UP_STATES)
    return Resolved(sorted(area_of),
                    [topics.area_cmd(a) for a in top_areas]
                    + [topics.cluster_cmd(r.id) for r in extra],
                    tuple(top_areas), frozenset(area_of.values()), offline)
