"""Response models built from stored rows, shared by the routes that return them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from controller.api.schemas import BroadcastOut, DeliveryOut, OccurrenceOut
from controller.broadcasting.states import BROADCAST_LIVE
from controller.db.models import Broadcast, Delivery, Occurrence, utcnow
from controller.runtime import Runtime

__all__ = ["broadcast_out", "occurrence_stats"]

#: per occurrence: deliveries by state, how many reported a start, earliest and latest start
_Stats = tuple[dict[str, int], int, datetime | None, datetime | None]


def occurrence_stats(db: Session, occurrence_ids: list[str]) -> dict[str, _Stats]:
    """One grouped query for every occurrence shown, not their deliveries as objects
    (a province emergency has thousands; a list shows fifty broadcasts)."""
    out: dict[str, _Stats] = {}
    if not occurrence_ids:
        return out
    q = (select(Delivery.occurrence_id, Delivery.state, func.count(),
                func.count(Delivery.started_at), func.min(Delivery.started_at),
                func.max(Delivery.started_at))
         .where(Delivery.occurrence_id.in_(occurrence_ids))
         .group_by(Delivery.occurrence_id, Delivery.state))
    for occ_id, state, n, started, lo, hi in db.execute(q):
        summary, n_started, first, last = out.get(occ_id, ({}, 0, None, None))
        summary[state] = n
        if lo is not None and (first is None or lo < first):
            first = lo
        if hi is not None and (last is None or hi > last):
            last = hi
        out[occ_id] = (summary, n_started + started, first, last)
    return out


def _occurrence_out(o: Occurrence, stats: dict[str, _Stats]) -> OccurrenceOut:
    summary, n_started, first, last = stats.get(o.id, ({}, 0, None, None))
    spread = (last - first).total_seconds() * 1000 if n_started > 1 and first and last \
        else None
    return OccurrenceOut(id=o.id, scheduled_at=o.scheduled_at, start_at=o.start_at,
                         status=o.status, summary=summary, content_id=o.content_id,
                         start_spread_ms=spread)


#: deliveries listed with a broadcast unless the caller asks for another page
DELIVERIES_PAGE = 1000


def broadcast_out(bc: Broadcast, rt: Runtime, full: bool = True,
         stats: dict[str, _Stats] | None = None, deliveries_limit: int = DELIVERIES_PAGE,
         deliveries_offset: int = 0) -> BroadcastOut:
    """``stats``: the occurrences' counts when the caller has them already (a list counts
    every broadcast's latest occurrence in one query). The deliveries come one page at a
    time: a province-wide bulletin has one per cluster."""
    db = object_session(bc)
    assert db is not None
    latest = bc.occurrences[-1] if bc.occurrences else None
    slots = []
    if bc.status in BROADCAST_LIVE:
        cur = utcnow()
        for _ in range(5):
            nxt = rt.dispatcher.next_slot(bc, cur)
            if nxt is None:
                break
            slots.append(nxt)
            cur = nxt
    children = [{"broadcast_id": c.id, "commune_id": c.commune_id, "status": c.status,
                 "start_at": c.start_at, "decided_by": c.decided_by,
                 "decision_note": c.decision_note} for c in bc.children] if full else []
    # per cluster: this broadcast's latest airing, or for one handed down, each commune's
    latests = [latest] if latest else [c.occurrences[-1] for c in bc.children if c.occurrences]
    deliveries = [DeliveryOut(cluster_id=d.cluster_id, state=d.state, started_at=d.started_at,
                              finished_at=d.finished_at, error=d.error, updated_at=d.updated_at,
                              revision=d.revision, assumed=d.assumed,
                              corrected_from=d.corrected_from, corrected_at=d.corrected_at,
                              stream=d.stream)
                  for d in db.execute(
                      select(Delivery.cluster_id, Delivery.state, Delivery.started_at,
                             Delivery.finished_at, Delivery.error, Delivery.updated_at,
                             Delivery.revision, Delivery.assumed, Delivery.corrected_from,
                             Delivery.corrected_at, Delivery.stream)
                      .where(Delivery.occurrence_id.in_([o.id for o in latests]))
                      .order_by(Delivery.cluster_id)
                      .limit(deliveries_limit).offset(deliveries_offset))] \
        if full and latests and deliveries_limit else []
    shown = bc.occurrences[-50:] if full else [latest] if latest else []
    if stats is None:
        stats = occurrence_stats(db, [o.id for o in shown])
    missing = [o.id for o in latests if o.id not in stats] if full else []
    counted = {**stats, **occurrence_stats(db, missing)} if missing else stats
    total = sum(sum(counted[o.id][0].values()) for o in latests if o.id in counted)
    return BroadcastOut(
        id=bc.id, title=bc.title, status=bc.status, priority=bc.priority,
        content_id=bc.content_id, targets=bc.targets, start_at=bc.start_at,
        recurrence=bc.recurrence, expires_at=bc.expires_at, created_at=bc.created_at,
        created_by=bc.created_by, origin_area_id=bc.origin_area_id, parent_id=bc.parent_id,
        commune_id=bc.commune_id, position=bc.position, volume_pct=bc.volume_pct,
        after_preempt=bc.after_preempt,
        revision=bc.revision or 0, approved_by=bc.approved_by, approved_at=bc.approved_at,
        decided_by=bc.decided_by, decided_at=bc.decided_at,
        decision_note=bc.decision_note, children=children, next_slots=slots,
        occurrence=_occurrence_out(latest, stats) if latest else None,
        deliveries=deliveries, deliveries_total=total,
        occurrences=[_occurrence_out(o, stats) for o in shown] if full else [],
    )
