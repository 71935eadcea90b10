"""The proof of play reported upward: per commune or per village, what was targeted,
what played, what failed, play time against the requested duration."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.broadcasting.targeting import ancestor_ids, resolve
from controller.db.models import Area, Broadcast, Cluster
from devices.messages import iso

__all__ = ["rollup"]


def _commune_of(db: Session, area_id: str | None, cache: dict[str, str]) -> str:
    if area_id is None:
        return "?"
    if area_id not in cache:
        chain = ancestor_ids(db, area_id)
        kinds = {a: db.get(Area, a).kind for a in chain}  # type: ignore[union-attr]
        cache[area_id] = next((a for a in chain if kinds[a] == "commune"), chain[-1])
    return cache[area_id]


def rollup(db: Session, bc: Broadcast, by: str = "commune",
            within: set[str] | None = None) -> list[dict[str, Any]]:
    """Per commune (or per village, ``by="village"``: each cluster's own area): clusters
    targeted and how they fared over all occurrences, with the first start and last end
    heard (proof of play). ``ratio`` is played deliveries over deliveries, so a recurring
    broadcast's ten slots count ten times. A bulletin handed down counts its communes'
    copies, and says what each commune decided. ``within``: only clusters in these areas."""
    ids = resolve(db, bc.target.areas, bc.target.clusters).cluster_ids
    clusters = {c.id: c for c in db.scalars(select(Cluster).where(Cluster.id.in_(ids)))
                if within is None or c.area_id in within}
    cache: dict[str, str] = {}

    def key(c: Cluster) -> str:
        return (c.area_id or "?") if by == "village" else _commune_of(db, c.area_id, cache)

    rows: dict[str, dict[str, Any]] = {}
    for cid in ids:
        c = clusters.get(cid)
        if c is None:
            continue
        k = key(c)
        area = db.get(Area, k)
        r = rows.setdefault(k, {
            "area_id": k, "name": area.name if area else k,
            "targeted": 0, "online": 0, "deliveries": 0, "played": 0, "playing": 0,
            "failed": 0, "unreachable": 0, "play_time_s": 0.0, "requested_s": 0.0,
            "first_started_at": None, "last_finished_at": None})
        r["targeted"] += 1
        r["online"] += c.state in ("online", "degraded")
    if by == "commune":
        for child in bc.children:
            decided = rows.get(child.commune_id or "")
            if decided is not None:
                decided["decision"] = child.status
                r["decided_by"] = child.decided_by
                r["note"] = child.decision_note
    occurrences = [o for b in [bc, *bc.children] for o in b.occurrences]
    for occ in occurrences:
        # (its own: a part's; a stream's is its slot, its content being its recording)
        streamed = bc.content.container == "stream"
        duration = (bc.content if streamed else occ.content or bc.content).duration_ms / 1000
        for d in occ.deliveries:
            c = clusters.get(d.cluster_id)
            if c is None:
                continue
            r = rows[key(c)]
            r["deliveries"] += 1
            r["requested_s"] += duration
            if d.started_at:  # heard starting, also while it still plays (or was preempted)
                first = r["first_started_at"]
                r["first_started_at"] = min(first, d.started_at) if first else d.started_at
            if d.state == "played":
                r["played"] += 1
                if d.stream is not None:  # a stream: what the board heard, gaps left out
                    r["play_time_s"] += d.stream.get("played_ms", 0) / 1000
                elif d.started_at and d.finished_at:
                    r["play_time_s"] += (d.finished_at - d.started_at).total_seconds()
                if d.finished_at:
                    last = r["last_finished_at"]
                    r["last_finished_at"] = max(last, d.finished_at) if last else d.finished_at
            elif d.state in ("playing", "preempted"):
                r["playing"] += 1
            elif d.state == "failed":
                r["failed"] += 1
            elif d.state == "missed":
                r["unreachable"] += 1
    for r in rows.values():
        r["play_time_s"] = round(r["play_time_s"], 1)
        r["requested_s"] = round(r["requested_s"], 1)
        r["ratio"] = round(r["played"] / r["deliveries"], 4) if r["deliveries"] else None
        for f in ("first_started_at", "last_finished_at"):
            if r[f] is not None:
                r[f] = iso(r[f])
    return sorted(rows.values(), key=lambda r: r["area_id"])
