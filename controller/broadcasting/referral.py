"""Bulletins from above (Thông tư 39/2020/TT-BTTTT): a province or district hands each
target commune its own copy.

* *normal*: the copy lands in the commune's inbox; the commune schedules it (at the
  suggested time or its own, to all or some of its villages) or declines it with a reason.
* *priority*: the copy is scheduled at once, at the given time or else in the commune's
  next programme slot, where it plays ahead of local items (see :mod:`controller.broadcasting.programme`);
  the commune may reorder it among priority items but not drop it.
* *emergency* is not handed down: it plays at once everywhere (one publish per area).

The parent keeps the issuer's view: per commune, the decision and what played.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.broadcasting.programme import commune_map
from controller.broadcasting.targeting import ancestor_ids
from controller.db.models import Area, Broadcast, Cluster, User

__all__ = ["from_above", "make_children", "split_by_commune"]


def from_above(db: Session, user: User) -> bool:
    """A province or district account: its normal and priority bulletins are handed down."""
    if user.area_id is None:
        return False
    area = db.get(Area, user.area_id)
    return area is not None and area.kind in ("province", "district")


def split_by_commune(db: Session, areas: list[str], clusters: list[str],
                     cluster_ids: list[str]) -> dict[str, dict[str, list[str]]]:
    """commune id -> the targets inside it (the commune itself when a whole province or
    district was targeted)."""
    area_of = {r.id: r.area_id for r in db.execute(
        select(Cluster.id, Cluster.area_id).where(Cluster.id.in_(cluster_ids)))}
    communes = commune_map(db, set(area_of.values()) | set(areas))
    per: dict[str, dict[str, list[str]]] = {}
    for cid in cluster_ids:  # every commune with a targeted cluster gets a copy
        c = communes.get(area_of.get(cid) or "")
        if c is not None:
            per.setdefault(c, {"areas": [], "clusters": []})
    for commune, t in per.items():
        chain = set(ancestor_ids(db, commune))
        if any(a in chain for a in areas):  # the commune or an area above it was targeted
            t["areas"] = [commune]
            continue
        t["areas"] = [a for a in areas if communes.get(a) == commune]
        inside = set(t["areas"])
        t["clusters"] = [c for c in clusters if communes.get(area_of.get(c) or "") == commune
                         and area_of.get(c) not in inside]
    return dict(per)


def make_children(parent: Broadcast, per_commune: dict[str, dict[str, list[str]]],
                  starts: dict[str, datetime | None]) -> list[Broadcast]:
    """The commune copies of ``parent``: in the inbox (normal) or scheduled (priority)."""
    out = []
    for commune, targets in sorted(per_commune.items()):
        out.append(Broadcast(
            id=uuid.uuid4().hex, title=parent.title, content_id=parent.content_id,
            priority=parent.priority, targets=targets, start_at=starts.get(commune),
            recurrence=parent.recurrence, expires_at=parent.expires_at,
            status="inbox" if parent.priority == "normal" else "scheduled",
            created_by=parent.created_by, origin_area_id=parent.origin_area_id,
            parent_id=parent.id, commune_id=commune, volume_pct=parent.volume_pct,
            after_preempt=parent.after_preempt,
            cap_ref=None))
    return out
