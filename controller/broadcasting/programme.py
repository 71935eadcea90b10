"""A commune's programme: local and pushed-down items never talk over each other.

Non-emergency items due on the same clusters at overlapping times play back to back.
Items are placed in this order: rank first (*priority* before *normal*, Thông tư
39/2020), then slot time, then the position the commune chose, then creation time; each
takes the earliest time at or after its slot where it overlaps nothing placed before it.
So a priority item keeps its slot and local items move around it (a normal item can never
push a priority one, however early it is booked). Occurrences about to start are fixed
blocks that nothing moves. One function, :func:`layout`, serves the dispatcher (the start
time it signs), the conflict preview and the programme view, so what the preview promises
is what airs. Emergencies are not laid out: they preempt on the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controller.access.policy import Policy, effective_policy
from controller.broadcasting.recurrence import Recurrence
from controller.broadcasting.states import (
    BROADCAST_LIVE,
    OCCURRENCE_OPEN,
    OccurrenceStatus,
)
from controller.broadcasting.targeting import TargetError, descendant_area_ids, resolve
from controller.db.models import Area, Broadcast, Cluster, Delivery, Occurrence

__all__ = [
    "LOOKAHEAD",
    "MOVABLE_AFTER",
    "NEW",
    "RANK",
    "Item",
    "area_policies",
    "area_policy",
    "commune_map",
    "gather",
    "layout",
    "moved",
    "place",
    "preview",
    "slots_between",
]

RANK = {"priority": 0, "normal": 1}
#: items in the window before a slot that can still push it (longer than any programme)
LOOKBACK = timedelta(hours=3)
LOOKAHEAD = timedelta(hours=1)
#: an occurrence already sent may still move until this long before it starts
MOVABLE_AFTER = timedelta(seconds=5)
NEW = "(new)"


@dataclass
class Item:
    broadcast_id: str
    title: str
    priority: str
    slot: datetime
    duration: timedelta
    clusters: frozenset[str]
    created_at: datetime
    position: int | None = None
    fixed: bool = False  # already dispatched: its times are signed and sent
    #: where it plays: its slot until ``layout`` places it (a fixed item: as it was sent)
    start: datetime = None  # type: ignore[assignment]
    end: datetime = None  # type: ignore[assignment]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.start is None:
            self.start = self.slot
        if self.end is None:
            self.end = self.start + self.duration

    def key(self) -> tuple[Any, ...]:
        return (RANK.get(self.priority, 1), self.slot,
                self.position if self.position is not None else 1 << 30,
                self.created_at, self.broadcast_id)


def layout(items: Iterable[Item], gap: timedelta) -> list[Item]:
    """Place every item that is not fixed at the earliest time at or after its slot where
    it shares no cluster with an item already placed (with ``gap`` between items)."""
    items = [replace(i) for i in items]
    placed = [i for i in items if i.fixed]
    for it in sorted((i for i in items if not i.fixed), key=Item.key):
        t = it.slot
        while True:
            clash = [p for p in placed if p.clusters & it.clusters
                     and p.start < t + it.duration + gap and t < p.end + gap]  # type: ignore[operator]
            if not clash:
                break
            t = max(p.end for p in clash) + gap  # type: ignore[type-var,operator]
        it.start, it.end = t, t + it.duration
        placed.append(it)
    return sorted(placed, key=lambda p: (p.start, p.key()))


def slots_between(bc: Broadcast, start: datetime, end: datetime, limit: int = 48) -> list[datetime]:
    if bc.recurrence:
        rec = Recurrence.model_validate(bc.recurrence)
        out: list[datetime] = []
        cur = start - timedelta(microseconds=1)
        while len(out) < limit:
            nxt = rec.next_after(cur, now=start)
            if nxt is None or nxt >= end or (bc.expires_at is not None and nxt >= bc.expires_at):
                break
            out.append(nxt)
            cur = nxt
        return out
    if bc.start_at is not None and start <= bc.start_at < end:
        return [bc.start_at]
    return []


def commune_map(db: Session, area_ids: Iterable[str | None]) -> dict[str, str | None]:
    """area id -> id of the commune it lies in (itself if it is one; None above communes).
    One query per tree level, not one per area."""
    out: dict[str, str | None] = {}
    todo = {a: a for a in area_ids if a is not None}  # original -> current ancestor
    # (a province's thousands of areas: every area in one read, not thousands of parameters)
    every = {r.id: r for r in db.execute(select(Area.id, Area.kind, Area.parent_id))} \
        if len(todo) > 200 else None
    for _ in range(8):
        if not todo:
            break
        rows = every if every is not None else {r.id: r for r in db.execute(
            select(Area.id, Area.kind, Area.parent_id).where(Area.id.in_(set(todo.values()))))}
        nxt: dict[str, str] = {}
        for orig, cur in todo.items():
            r = rows.get(cur)
            if r is None or r.kind in ("province", "district", "country"):
                out[orig] = None
            elif r.kind == "commune":
                out[orig] = r.id
            elif r.parent_id is None:
                out[orig] = None
            else:
                nxt[orig] = r.parent_id
        todo = nxt
    return out


def area_policy(db: Session, area_id: str) -> Policy:
    return area_policies(db, [area_id])[area_id]


def area_policies(db: Session, area_ids: Iterable[str | None]) -> dict[str, Policy]:
    """The effective policy of each area: its overrides and its ancestors', merged. One
    query per tree level for all the areas together (a province item touches hundreds of
    villages that share a handful of ancestors)."""
    rows: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
    todo = {a for a in area_ids if a}
    for _ in range(16):
        todo -= rows.keys()
        if not todo:
            break
        for r in db.execute(select(Area.id, Area.parent_id, Area.policy).where(Area.id.in_(todo))):
            rows[r.id] = (r.parent_id, r.policy)
        todo = {p for p, _ in rows.values() if p and p not in rows}
    merged: dict[str, Policy] = {}

    def of(a: str) -> Policy:
        # an area with no overrides of its own has its parent's policy: a province's
        # 9,000 villages share their 667 communes' (merged once each, not once a village)
        if a in merged:
            return merged[a]
        parent, policy = rows[a]
        if not policy and parent is not None and parent in rows and parent != a:
            merged[a] = of(parent)
            return merged[a]
        chain: list[dict[str, Any] | None] = []
        cur: str | None = a
        while cur is not None and cur in rows and len(chain) < 16:
            up, own = rows[cur]
            chain.append(own)
            cur = up
        merged[a] = effective_policy(list(reversed(chain)))
        return merged[a]

    out: dict[str, Policy] = {}
    for a in {a for a in area_ids if a}:
        out[a] = of(a) if a in rows else effective_policy([])
    return out


def _clusters_of(db: Session, bc: Broadcast) -> set[str]:
    try:
        return set(resolve(db, bc.target.areas, bc.target.clusters)
                   .cluster_ids)
    except TargetError:
        return set()


def gather(db: Session, clusters: set[str], start: datetime, end: datetime,
           exclude: str | None = None, now: datetime | None = None) -> list[Item]:
    """Every non-emergency item that can air on the communes of ``clusters`` between
    ``start`` and ``end``: occurrences already created and slots still planned.

    An occurrence already sent is fixed once it is about to start (``MOVABLE_AFTER``
    from ``now``); before that it may still move (its clusters get the new start as a
    new revision), so a priority bulletin can go ahead of local items already sent."""
    cmap = commune_map(db, set(db.scalars(select(Cluster.area_id).where(Cluster.id.in_(clusters)))))
    communes = {c for c in cmap.values() if c}
    local = set(db.scalars(select(Cluster.id).where(
        Cluster.area_id.in_(descendant_area_ids(db, communes))))) if communes else set()
    local |= clusters
    items: list[Item] = []
    dispatched: set[tuple[str, datetime]] = set()
    occs = db.scalars(select(Occurrence).join(Broadcast).where(
        Occurrence.start_at < end, Occurrence.ends_at > start - LOOKBACK,
        Occurrence.status.in_(OCCURRENCE_OPEN | {OccurrenceStatus.COMPLETED}),
        Broadcast.priority != "emergency",
        Occurrence.deliveries.any(Delivery.cluster_id.in_(local)))
        .options(selectinload(Occurrence.deliveries), selectinload(Occurrence.broadcast)))
    for occ in occs:
        dispatched.add((occ.broadcast_id, occ.scheduled_at))
        if occ.broadcast_id == exclude:
            continue
        mine = frozenset(d.cluster_id for d in occ.deliveries
                         if d.state not in ("cancelled", "missed")) & local
        if mine:
            bc = occ.broadcast
            movable = (now is not None and occ.status in OCCURRENCE_OPEN
                       and occ.start_at > now + MOVABLE_AFTER)
            items.append(Item(bc.id, bc.title, bc.priority, occ.scheduled_at,
                              occ.ends_at - occ.start_at, mine, bc.created_at, bc.position,
                              fixed=not movable, start=occ.start_at, end=occ.ends_at,
                              meta={"occurrence_id": occ.id, "origin": bc.origin_area_id,
                                    "was": occ.start_at}))
    q = select(Broadcast).where(Broadcast.status.in_(BROADCAST_LIVE),
                                Broadcast.priority != "emergency")
    if communes:  # broadcasts confined to one commune carry it; wider ones have none
        q = q.where((Broadcast.commune_id.in_(communes)) | (Broadcast.commune_id.is_(None)))
    for bc in db.scalars(q):
        if bc.id == exclude:
            continue
        slots = [s for s in slots_between(bc, start - LOOKBACK, end)
                 if (bc.id, s) not in dispatched]
        if not slots:
            continue
        mine = frozenset(_clusters_of(db, bc) & local)
        if not mine:
            continue
        for s in slots:
            items.append(Item(bc.id, bc.title, bc.priority, s,
                              timedelta(milliseconds=bc.content.duration_ms), mine,
                              bc.created_at, bc.position, meta={"origin": bc.origin_area_id}))
    return items


def place(db: Session, bc: Broadcast, slot: datetime, clusters: set[str], gap: timedelta,
          now: datetime) -> tuple[datetime, dict[str, datetime]]:
    """The start time of ``bc``'s item at ``slot`` in the programme of its clusters, and
    the occurrences already sent that must move for it: {occurrence id: new start}."""
    if bc.priority == "emergency":
        return slot, {}
    items = gather(db, clusters, slot, slot + LOOKAHEAD, exclude=bc.id, now=now)
    me = Item(bc.id, bc.title, bc.priority, slot, timedelta(milliseconds=bc.content.duration_ms),
              frozenset(clusters), bc.created_at, bc.position)
    placed = layout([*items, me], gap)
    start = next((it.start for it in placed if it.broadcast_id == bc.id and it.slot == slot
                  and not it.fixed), slot)
    return start, moved(placed, now)  # type: ignore[return-value]


def moved(placed: list[Item], now: datetime) -> dict[str, datetime]:
    """Occurrences already sent whose place changed: {occurrence id: new start}."""
    return {it.meta["occurrence_id"]: it.start for it in placed
            if "was" in it.meta and not it.fixed and it.start != it.meta["was"]
            and it.start > now + MOVABLE_AFTER}  # type: ignore[misc,operator]


def _fmt(t: datetime | None, zone: ZoneInfo) -> str:
    return t.astimezone(zone).strftime("%H:%M:%S") if t else "?"


def preview(db: Session, clusters: set[str], slot: datetime, duration: timedelta,
            priority: str, title: str, position: int | None, now: datetime,
            gap: timedelta, zone: ZoneInfo, names: dict[str, str]) -> dict[str, Any]:
    """What a new item at ``slot`` collides with, per commune, and how it will be resolved."""
    items = gather(db, clusters, slot, slot + duration + LOOKAHEAD, now=now)
    cmap_area = {r.id: r.area_id for r in db.execute(select(Cluster.id, Cluster.area_id).where(
        Cluster.id.in_({c for i in items for c in i.clusters} | clusters)))}
    communes = commune_map(db, set(cmap_area.values()))
    commune_of = {c: communes.get(a) or a or "?" for c, a in cmap_area.items()}
    before = {(i.broadcast_id, i.slot): i for i in layout(items, gap)}
    if priority == "emergency":
        start, end = slot, slot + duration
        after = before
    else:
        me = Item(NEW, title, priority, slot, duration, frozenset(clusters), now, position)
        placed = layout([*items, me], gap)
        new = next(i for i in placed if i.broadcast_id == NEW)
        start, end = new.start, new.end
        after = {(i.broadcast_id, i.slot): i for i in placed if i.broadcast_id != NEW}
    assert start is not None and end is not None
    per: dict[str, dict[str, Any]] = {}
    for c in sorted(clusters):
        cid = commune_of.get(c, "?")
        per.setdefault(cid, {"area_id": cid, "name": names.get(cid, cid), "clusters": 0,
                             "collisions": []})["clusters"] += 1
    for k, b in before.items():
        a = after[k]
        for cid, row in per.items():
            shared = {c for c in b.clusters & clusters if commune_of.get(c) == cid}
            if not shared:
                continue
            overlaps = (b.start < end + gap and start < b.end + gap  # type: ignore[operator]
                        or b.start < slot + duration + gap and slot < b.end + gap)
            moved = a.start != b.start
            if not (overlaps or moved):
                continue
            entry = {"broadcast_id": b.broadcast_id, "title": b.title, "priority": b.priority,
                     "start": b.start, "end": b.end, "clusters": len(shared)}
            if priority == "emergency":
                entry["resolution"] = (f"preempted at {_fmt(start, zone)}; resumes where it "
                                       "stopped when the emergency ends (or is marked "
                                       "preempted if it expires meanwhile)")
            elif moved:
                entry["resolution"] = (f"moves from {_fmt(b.start, zone)} to "
                                       f"{_fmt(a.start, zone)}, after the new item")
                entry["new_start"] = a.start
            else:
                entry["resolution"] = (f"plays first ({_fmt(b.start, zone)}–"
                                       f"{_fmt(b.end, zone)}); the new item follows")
            row["collisions"].append(entry)
    delay = (start - slot).total_seconds()
    if priority == "emergency":
        summary = "emergency: plays at once and preempts whatever is playing"
    elif delay > 0:
        summary = (f"starts at {_fmt(start, zone)}, {delay:.0f} s after its slot, behind "
                   "items that come first in the programme")
    else:
        n_moved = sum(1 for r in per.values() for e in r["collisions"] if "new_start" in e)
        summary = (f"starts on time at {_fmt(start, zone)}"
                   + (f"; {n_moved} item(s) move later" if n_moved else ""))
    return {"slot": slot, "start": start, "end": end, "delay_s": delay, "summary": summary,
            "communes": sorted(per.values(), key=lambda r: r["area_id"])}
