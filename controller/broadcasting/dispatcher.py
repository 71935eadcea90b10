"""Turns broadcasts into occurrences, deliveries and signed commands, and folds the
clusters' reports back into delivery states.

An occurrence is created once per (broadcast, slot) (a unique constraint), so a restart, a
re-fired job or a second call cannot air it twice. Its commands name the occurrence id, and
clusters ignore a second play for an occurrence they already have, so re-sending (to a
cluster that reconnects, or after a controller restart) is always safe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from nacl.signing import SigningKey
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.broadcasting.content_server import ContentServer
from controller.broadcasting.programme import (
    LOOKAHEAD,
    MOVABLE_AFTER,
    area_policies,
    gather,
    layout,
    moved,
    place,
)
from controller.broadcasting.recurrence import Recurrence
from controller.broadcasting.spool import Intent, Spool, columns, record
from controller.broadcasting.states import (
    BROADCAST_LIVE,
    CLUSTER_FINAL,
    DELIVERY_FINAL,
    OCCURRENCE_OPEN,
    REPORT_MOVES,
    BroadcastStatus,
    DeliveryStatus,
    OccurrenceStatus,
    move,
)
from controller.broadcasting.targeting import Resolved, TargetError, resolve
from controller.db.models import (
    Broadcast,
    Cluster,
    Content,
    ContentBlob,
    Delivery,
    Occurrence,
    table_of,
    utcnow,
)
from controller.errors import Unavailable
from controller.fleet.health import UP_STATES
from controller.settings import Settings
from controller.storage import StorageMonitor, is_storage_error
from devices import topics
from devices.messages import (
    CancelBody,
    ContentManifest,
    DeliveryEvent,
    DeliveryState,
    LineSpec,
    PlayBody,
    Priority,
    RefusedEvent,
)
from devices.signing import sign_command
from devices.stream import StreamSpec

log = logging.getLogger(__name__)

__all__ = ["Dispatcher"]

TERMINAL = DELIVERY_FINAL
#: final states a cluster reports: they replace a final state the controller concluded
REPORTED_FINAL = CLUSTER_FINAL & DELIVERY_FINAL


#: commands whose refusals can still be attributed (a province's day of commands)
COMMANDS_REMEMBERED = 500_000

#: silence between a part of a broadcast and the next (a CAP emergency's headline and the
#: rest of its text)
PART_GAP_S = 0.4

#: a delivery as a batch of reports sees it: plain columns. Loading an emergency's 600
#: deliveries as ORM objects, and flushing them one UPDATE at a time, was the slow part.
_REPORTS = select(Delivery.id, Delivery.cluster_id, Delivery.state, Delivery.started_at,
                  Delivery.finished_at, Delivery.error, Delivery.revision, Delivery.assumed,
                  Delivery.corrected_from, Delivery.corrected_at, Delivery.stream)
_REPORT_UPDATE = (update(table_of(Delivery)).where(table_of(Delivery).c.id == bindparam("_id"))
                  .values(state=bindparam("_state"), updated_at=bindparam("_updated_at"),
                          started_at=bindparam("_started_at"),
                          finished_at=bindparam("_finished_at"), error=bindparam("_error"),
                          revision=bindparam("_revision"), assumed=bindparam("_assumed"),
                          corrected_from=bindparam("_corrected_from"),
                          corrected_at=bindparam("_corrected_at"),
                          stream=bindparam("_stream")))


@dataclass(slots=True)
class _Report:
    id: int
    cluster_id: str
    state: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    revision: int | None
    assumed: bool
    corrected_from: str | None
    corrected_at: datetime | None
    stream: dict[str, Any] | None = None
    occ_revision: int = 0
    updated_at: datetime | None = None
    dirty: bool = False

    def params(self) -> dict[str, object]:
        return {"_id": self.id, "_state": self.state, "_updated_at": self.updated_at,
                "_started_at": self.started_at, "_finished_at": self.finished_at,
                "_error": self.error, "_revision": self.revision, "_assumed": self.assumed,
                "_corrected_from": self.corrected_from, "_corrected_at": self.corrected_at,
                "_stream": self.stream}


#: how long an immediate emergency waits for its command to be in the broker's socket
#: before it writes its rows anyway
WRITE_WAIT_S = 0.05


class StreamRunner(Protocol):
    """What the dispatcher needs of :class:`controller.live.streams.Streams`."""

    def ensure(self, occurrence_id: str, content: Content, spec: StreamSpec,
               start_at: datetime) -> None: ...

    def stop(self, occurrence_id: str, reason: str) -> None: ...


class Dispatcher:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], key: SigningKey,
                 publish: Callable[[str, bytes, int], bool], content: ContentServer,
                 wait_written: Callable[[float], bool] | None = None,
                 spool: Spool | None = None, storage: StorageMonitor | None = None,
                 link_up: Callable[[], bool] | None = None):
        self.settings = settings
        #: is the broker link up (nothing is retried while it is not)
        self.link_up = link_up or (lambda: True)
        self.spool = spool
        self.storage = storage or StorageMonitor()
        #: airings on the wire whose rows are not committed yet (occurrence id -> intent):
        #: written by :meth:`record_unrecorded` before any report about them is applied
        self.unrecorded: dict[str, Intent] = {}
        #: the link came back: clusters that have not confirmed a play get it again
        self._link_returned = False
        self.sessions = sessions
        self.key = key
        self.publish = publish
        #: blocks until what was published is in the broker's socket (Link.wait_written)
        self.wait_written = wait_written
        self.content = content
        self.counters: Counter[str] = Counter()
        self.plan_next: Callable[[Broadcast, datetime], None] | None = None
        #: command id -> (occurrence id, the topic it was published on): a refusal is about
        #: our command only if it names the topic we sent it on (oldest forgotten first)
        self._command_occurrence: dict[str, tuple[str, str]] = {}
        #: occurrence id -> (clusters that have not confirmed the cancel, until when to retry)
        self._unconfirmed_cancels: dict[str, tuple[set[str], datetime]] = {}
        #: deliveries loaded during the current ingest batch (None outside one): occurrence
        #: id -> (its revision, cluster id -> its delivery, None if it has none)
        self._batch: dict[str, tuple[int, dict[str, _Report | None]]] | None = None
        #: held from an immediate emergency's publish until its rows are committed; the
        #: ingest thread takes it around a batch of events, so that no report is applied
        #: (and lost as unknown) before the delivery it reports on exists
        self.gate = threading.Lock()
        #: the live and relay sessions that send a stream's frames (set by the runtime)
        self.streams: StreamRunner | None = None
        #: (cluster, occurrence, state) reported after the delivery was cancelled: the
        #: ingest opens a played_after_cancel alert for each
        self.played_after_cancel: list[tuple[str, str, str]] = []

    # --- dispatch ------------------------------------------------------------------------

    def dispatch(self, broadcast_id: str, scheduled_at: datetime,
                 resolved: Resolved | None = None) -> Occurrence | None:
        """Create (once) and send the occurrence of ``broadcast_id`` at slot ``scheduled_at``.
        ``resolved``: its targets, when the caller has just resolved them (an emergency sent
        from the API): not resolved again on the way to the wire."""
        with self.sessions() as db:
            bc = db.get(Broadcast, broadcast_id)
            if bc is None or bc.status not in BROADCAST_LIVE:
                return None
            occ = db.scalar(select(Occurrence).where(Occurrence.broadcast_id == bc.id,
                                                     Occurrence.scheduled_at == scheduled_at))
            if occ is None:
                if resolved is None:
                    try:
                        resolved = resolve(db, bc.target.areas,
                                           bc.target.clusters)
                    except TargetError as exc:
                        log.error("broadcast %s: %s", bc.id, exc)
                try:
                    occ = self._create_occurrence(db, bc, scheduled_at,
                                                  resolved.cluster_ids if resolved else [])
                except Exception as exc:
                    if not is_storage_error(exc) or resolved is None:
                        raise
                    db.rollback()
                    self.storage.failed(exc)
                    occ = self._send_unrecorded(db, bc, scheduled_at, resolved)
                    if bc.recurrence and self.plan_next is not None:
                        self.plan_next(bc, scheduled_at)
                    return occ
                if occ is None:
                    return None
            if occ.status in OCCURRENCE_OPEN:
                self._send(db, occ, bc, resolved)
            if bc.recurrence and self.plan_next is not None:
                self.plan_next(bc, scheduled_at)
            return occ

    def dispatch_immediate(self, db: Session, bc: Broadcast, resolved: Resolved) -> Occurrence:
        """An emergency that plays at once, from the request that creates it: ``bc`` is
        added to ``db`` but not yet committed. Its command goes on the wire first, then the
        broadcast, its occurrence and its deliveries are written in one transaction: with
        thousands of clusters, writing their rows first kept every one of them waiting.
        The ingest thread holds reports back (``gate``) until the rows are committed."""
        now = utcnow()
        start = max(bc.start_at or now, now + timedelta(seconds=self.settings.emergency_lead_s))
        occ = Occurrence(id=uuid.uuid4().hex, broadcast_id=bc.id,
                         scheduled_at=bc.start_at or start, start_at=start,
                         ends_at=start + timedelta(milliseconds=bc.content.duration_ms),
                         status="pending", content_id=bc.content_id, revision=0)
        bc.revision = 0  # (column defaults of a pending row are applied only at its flush)
        if bc.expires_at is not None and start >= bc.expires_at:  # recorded as missed
            db.commit()
            self.dispatch(bc.id, occ.scheduled_at, resolved)
            return occ
        body = self._play_body(db, occ, bc)
        expires = self._expiry(occ, bc)
        with self.gate:
            # described on disk before it is on the wire: a crash before the rows are
            # committed cannot leave it aired and unrecorded (spool.py)
            intent = self._intent(bc, occ, resolved, "sent", new_broadcast=True)
            spooled = self.spool is not None and self.spool.add(intent)
            ok = self._publish_play(occ, bc, resolved, body, expires)
            if ok and self.wait_written is not None:
                # on the wire before this thread writes the rows (bounded: a link that is
                # down or slow must not hold the request)
                self.wait_written(WRITE_WAIT_S)
            sent_at = utcnow()
            move(bc, BroadcastStatus.ACTIVE)
            if ok:
                move(occ, OccurrenceStatus.SENT)
                occ.sent_at = sent_at
            # (who was offline: as the request resolved its targets, milliseconds ago)
            offline = resolved.offline if ok else frozenset()
            rows = [{"occurrence_id": occ.id, "cluster_id": c,
                     "state": "sent" if ok else "pending",
                     "error": "cluster offline when sent" if c in offline else None,
                     "updated_at": sent_at} for c in resolved.cluster_ids]
            if not ok:
                intent = self._intent(bc, occ, resolved, "pending", new_broadcast=True)
            # it is on the air already: a write that fails (a lock held too long, a lost
            # connection) is tried again before the request gives up, reports held meanwhile
            for attempt in range(3):
                try:
                    db.add_all([bc, occ])
                    db.flush()  # the broadcast and occurrence rows before their deliveries
                    # (Core, not the ORM's bulk path: no per-row bookkeeping)
                    db.execute(insert(table_of(Delivery)), rows)
                    db.commit()
                    break
                except OperationalError as exc:
                    db.rollback()
                    log.error("emergency %s is on the air but not yet recorded (attempt %d): %s",
                              occ.id, attempt + 1, str(exc).splitlines()[0][:200])
                    if attempt == 2:
                        # recorded as soon as the database takes writes (before any report
                        # about it is applied); the caller answers 503 with the reason
                        problem = self.storage.failed(exc)
                        self.unrecorded[occ.id] = intent
                        if not spooled and self.spool is not None:
                            self.spool.add(intent)
                        raise Unavailable(
                            "storage_unavailable", "the emergency is on the air; the database "
                            "refuses writes, and it is recorded as soon as it takes them",
                            reason=problem.reason, since=problem.since.isoformat(),
                            on_air=ok, broadcast_id=bc.id, occurrence_id=occ.id) from exc
                    time.sleep(0.2 * (attempt + 1))
            if spooled and self.spool is not None:
                self.spool.done(occ.id)
        return occ

    # --- a broadcast in parts: what follows the part on the air ---------------------------

    def reserve_part(self, db: Session, bc: Broadcast, after: Occurrence) -> Occurrence:
        """A next part of ``bc`` whose audio is still being made (a CAP emergency's
        description, after its headline went on the air): an occurrence with no content
        yet, due right after ``after`` ends, with a pending delivery for each cluster
        ``after`` has. It keeps the broadcast from completing, a cancel cancels it, and
        :meth:`send_part` sends it once its audio exists (the sweep records it missed if
        that never happens)."""
        start = after.ends_at + timedelta(seconds=PART_GAP_S)
        occ = Occurrence(id=uuid.uuid4().hex, broadcast_id=bc.id, scheduled_at=start,
                         start_at=start, ends_at=start, status="pending", content_id=None,
                         revision=0)
        db.add(occ)
        db.flush()
        clusters = db.scalars(select(Delivery.cluster_id).where(
            Delivery.occurrence_id == after.id)).all()
        if clusters:
            db.execute(insert(table_of(Delivery)), [
                {"occurrence_id": occ.id, "cluster_id": c, "state": "pending",
                 "updated_at": utcnow()} for c in clusters])
        db.commit()
        return occ

    def send_part(self, occurrence_id: str, content_id: str) -> bool:
        """Give a reserved part its audio and send it: at its planned start if that is
        still ahead, else as soon as every cluster can have it. False when it is no longer
        wanted (cancelled, or its broadcast is over)."""
        with self.sessions() as db:
            occ = db.get(Occurrence, occurrence_id)
            content = db.get(Content, content_id)
            if occ is None or content is None or occ.status != OccurrenceStatus.PENDING:
                return False
            bc = occ.broadcast
            if bc.status not in BROADCAST_LIVE:
                return False
            lead = self.settings.emergency_lead_s if bc.priority == "emergency" \
                else self.settings.min_start_lead_s
            start = max(occ.scheduled_at, utcnow() + timedelta(seconds=lead))
            # committed with its "sent" by _send, not before: the sweep sends a pending
            # occurrence that has content, and must not send this one a second time
            occ.content_id, occ.content = content.id, content
            occ.start_at = start
            occ.ends_at = start + timedelta(milliseconds=content.duration_ms)
            self._send(db, occ, bc)
            return occ.status == OccurrenceStatus.SENT

    # --- airings sent before their rows (spool.py) ------------------------------------

    def _intent(self, bc: Broadcast, occ: Occurrence, resolved: Resolved, state: str,
                new_broadcast: bool = False) -> Intent:
        now = utcnow()
        offline = resolved.offline if state == "sent" else frozenset()
        bcols = None
        if new_broadcast:
            bcols = columns(bc)
            bcols["status"] = BroadcastStatus.ACTIVE.value
        ocols = columns(occ)
        if state == "sent":
            ocols["status"], ocols["sent_at"] = OccurrenceStatus.SENT.value, now
        # (deliveries as lists of ids, not a row each: it is written before the publish)
        return {"id": occ.id, "broadcast_id": bc.id, "broadcast": bcols, "occurrence": ocols,
                "deliveries": {"state": state, "updated_at": now, "error": None,
                               "clusters": list(resolved.cluster_ids),
                               "offline": sorted(offline)}}

    def _send_unrecorded(self, db: Session, bc: Broadcast, scheduled_at: datetime,
                         resolved: Resolved) -> Occurrence | None:
        """The database refuses writes at an airing's dispatch: send it from memory, and
        record it (:meth:`record_unrecorded`) once writes succeed again."""
        now = utcnow()
        lead = (self.settings.emergency_lead_s if bc.priority == "emergency"
                else self.settings.min_start_lead_s)
        start = max(scheduled_at, now + timedelta(seconds=lead))
        occ = Occurrence(id=uuid.uuid4().hex, broadcast_id=bc.id, scheduled_at=scheduled_at,
                         start_at=start, ends_at=start + timedelta(
                             milliseconds=bc.content.duration_ms),
                         status="pending", content_id=bc.content_id, revision=bc.revision or 0)
        if (start - scheduled_at).total_seconds() > self.settings.late_grace_s or (
                bc.expires_at is not None and start >= bc.expires_at) or not resolved.cluster_ids:
            occ.status = OccurrenceStatus.MISSED.value  # recorded missed, with the reason
            intent = self._intent(bc, occ, resolved, "missed")
            intent["deliveries"]["error"] = "too late to start while the database refused writes"
            with self.gate:
                self.unrecorded[occ.id] = intent
            return None
        body = self._play_body(db, occ, bc, self._volume_cap(db, bc, occ, resolved.cluster_areas))
        ok = self._publish_play(occ, bc, resolved, body, self._expiry(occ, bc))
        intent = self._intent(bc, occ, resolved, "sent" if ok else "pending")
        with self.gate:
            self.unrecorded[occ.id] = intent
        if self.spool is not None:
            self.spool.add(intent)
        log.error("occurrence %s of %s sent from memory (%s): recorded once the database "
                  "takes writes", occ.id, bc.id, "on the wire" if ok else "link down")
        return occ

    def record_unrecorded(self, db: Session) -> int:
        """Write the rows of airings sent before they were recorded, and commit. Raises what
        the database raises (the caller retries): reports about them must wait."""
        if not self.unrecorded:
            return 0
        pending = list(self.unrecorded.values())
        n = sum(record(db, intent) for intent in pending)
        db.commit()
        for intent in pending:
            self.unrecorded.pop(intent["id"], None)
            if self.spool is not None:
                self.spool.done(intent["id"])
        log.warning("%d airing(s) sent before they were recorded are recorded now", n)
        return n

    def recover_spool(self) -> int:
        """On start: what a crash left between a publish and its commit."""
        if self.spool is None:
            return 0
        pending = self.spool.pending()
        for intent in pending:
            self.unrecorded[intent["id"]] = intent
        try:
            with self.sessions() as db:
                n = self.record_unrecorded(db)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            self.storage.failed(exc)
            return 0
        self.spool.clear()
        return n

    def _create_occurrence(self, db: Session, bc: Broadcast, scheduled_at: datetime,
                           cluster_ids: list[str]) -> Occurrence | None:
        now = utcnow()
        lead = (self.settings.emergency_lead_s if bc.priority == "emergency"
                else self.settings.min_start_lead_s)
        # its place in the programme: after items that come first on the same clusters
        planned, moves = place(db, bc, scheduled_at, set(cluster_ids),
                               timedelta(seconds=self.settings.programme_gap_s), now) \
            if cluster_ids else (scheduled_at, {})
        start = max(planned, now + timedelta(seconds=lead))
        duration = timedelta(milliseconds=bc.content.duration_ms)
        occ = Occurrence(id=uuid.uuid4().hex, broadcast_id=bc.id, scheduled_at=scheduled_at,
                         start_at=start, ends_at=start + duration, status="pending",
                         content_id=bc.content_id, revision=bc.revision)
        late = (start - planned).total_seconds() > self.settings.late_grace_s
        expired = bc.expires_at is not None and start >= bc.expires_at
        if late or expired or not cluster_ids:
            move(occ, OccurrenceStatus.MISSED)
        state = "missed" if occ.status == OccurrenceStatus.MISSED else "pending"
        error = ("controller was down past the late-start limit" if late else
                 "expired before it could start" if expired else None)
        if bc.status == BroadcastStatus.SCHEDULED:
            move(bc, BroadcastStatus.ACTIVE)
        db.add(occ)
        try:
            db.flush()  # the occurrence row first: a concurrent dispatch of the slot fails here
            if cluster_ids:  # one bulk INSERT, not an ORM object per cluster (a province: 1000s)
                db.execute(insert(Delivery), [
                    {"occurrence_id": occ.id, "cluster_id": c, "state": state, "error": error,
                     "updated_at": now} for c in cluster_ids])
            db.commit()
        except IntegrityError:  # dispatched concurrently: use the other one
            db.rollback()
            return db.scalar(select(Occurrence).where(Occurrence.broadcast_id == bc.id,
                                                      Occurrence.scheduled_at == scheduled_at))
        if occ.status == OccurrenceStatus.MISSED:
            log.warning("occurrence %s of %s missed: %s", occ.id, bc.id, error or "no clusters")
        elif moves:
            self._move(db, moves)
        return occ

    def reflow(self, db: Session, bc: Broadcast) -> int:
        """Re-lay the programme around ``bc``'s coming occurrences (after a reorder or a
        cancel); occurrences already sent that change place get their new start."""
        now = utcnow()
        gap = timedelta(seconds=self.settings.programme_gap_s)
        moves: dict[str, datetime] = {}
        for occ in list(bc.occurrences):
            if occ.start_at <= now + MOVABLE_AFTER or not occ.deliveries:
                continue
            clusters = {d.cluster_id for d in occ.deliveries}
            slot = occ.scheduled_at
            moves.update(moved(layout(gather(db, clusters, slot, slot + LOOKAHEAD, now=now),
                                      gap), now))
        if moves:
            self._move(db, moves)
        return len(moves)

    def _move(self, db: Session, moves: dict[str, datetime]) -> None:
        """Occurrences already sent that a new item goes ahead of: a new start, sent as a
        new revision (clusters replace an item they have not started)."""
        changed = []
        for occ_id, start in moves.items():
            occ = db.get(Occurrence, occ_id)
            if occ is None or occ.status != OccurrenceStatus.SENT:
                continue
            log.info("occurrence %s of %s moves from %s to %s in the programme", occ.id,
                     occ.broadcast_id, occ.start_at.isoformat(), start.isoformat())
            occ.start_at, occ.ends_at = start, start + (occ.ends_at - occ.start_at)
            changed.append(occ)
        self._reissue(db, changed)

    def _reissue(self, db: Session, changed: list[Occurrence]) -> None:
        """Occurrences changed before they started (new start or content): a higher
        revision, clusters holding them must take them again, committed, then re-sent."""
        now = utcnow()
        for occ in changed:
            occ.revision = (occ.revision or 0) + 1
            for d in occ.deliveries:
                if d.state in (DeliveryStatus.RECEIVED, DeliveryStatus.READY):
                    move(d, DeliveryStatus.SENT)  # to fetch and confirm the new content
                    d.updated_at = now
        db.commit()  # before publishing: the clusters' reports must find the new state
        for occ in changed:
            if occ.status == OccurrenceStatus.SENT:
                self._resend(db, occ, occ.broadcast)

    def _expiry(self, occ: Occurrence, bc: Broadcast) -> datetime:
        exp = occ.ends_at + timedelta(seconds=self.settings.late_grace_s)
        if bc.expires_at is not None:
            exp = min(exp, max(bc.expires_at, occ.start_at + timedelta(seconds=1)))
        return exp

    def _play_body(self, db: Session, occ: Occurrence, bc: Broadcast,
                   cap: int | None = None) -> PlayBody:
        c: Content = bc.content if bc.content.container == "stream" else occ.content or bc.content
        emergency = bc.priority == "emergency"
        source: dict[str, Any]
        if c.container == "line":  # the board's own input (§6.2): nothing to send it
            blob = db.get(ContentBlob, c.sha256)
            desc = json.loads(blob.data) if blob is not None else {}
            source = {"line": LineSpec(input=desc.get("input", "line"),
                                       frequency_khz=desc.get("frequency_khz"),
                                       duration_ms=c.duration_ms)}
        elif c.container == "stream":  # a live voice or a relay: joined, not fetched (§6.1)
            covering = resolve(db, bc.target.areas, bc.target.clusters).topics
            source = {"stream": StreamSpec(
                stream_id=occ.id, kind=c.kind, duration_ms=c.duration_ms,
                latency_ms=self.settings.stream_latency_ms,
                topics=[t.removesuffix("/cmd") + f"/stream/{occ.id}" for t in covering])}
        else:
            source = {"content": ContentManifest(
                sha256=c.sha256, size=c.size, chunk_size=self.content.chunk_size,
                chunks=self.content.chunk_count(c.size), codec=c.codec,
                container=c.container, duration_ms=c.duration_ms)}
        return PlayBody(
            broadcast_id=bc.id, occurrence_id=occ.id, priority=Priority(bc.priority),
            start_at=occ.start_at,
            volume_pct=self.settings.emergency_volume_pct if emergency else bc.volume_pct,
            max_volume_pct=None if emergency else cap, revision=occ.revision,
            after_preempt=bc.after_preempt or self.settings.after_preempt, **source)

    def _send(self, db: Session, occ: Occurrence, bc: Broadcast,
              resolved: Resolved | None = None) -> None:
        if resolved is None:
            resolved = resolve(db, bc.target.areas, bc.target.clusters)
        body = self._play_body(db, occ, bc, self._volume_cap(db, bc, occ, resolved.cluster_areas))
        expires = self._expiry(occ, bc)
        db.refresh(bc)  # last moment: a cancel may have been committed meanwhile
        if bc.status not in BROADCAST_LIVE:
            return
        ok = self._publish_play(occ, bc, resolved, body, expires)
        now = utcnow()
        if not ok:
            # stays pending: sent again by the sweep (retry_unsent) once the link is back
            self.counters["send_failed"] += 1
            log.warning("occurrence %s of %s not sent (the broker link is down); it is sent "
                        "again when the link returns", occ.id, bc.id)
        if ok:
            # conditional updates: reports may already have moved a delivery past "sent"
            pending = update(Delivery).where(Delivery.occurrence_id == occ.id,
                                             Delivery.state == "pending")
            up = select(Cluster.id).where(Cluster.state.in_(UP_STATES))
            db.execute(pending.where(Delivery.cluster_id.in_(up))
                       .values(state="sent", updated_at=now, error=None))
            db.execute(pending.values(state="sent", updated_at=now,
                                      error="cluster offline when sent"))
            move(occ, OccurrenceStatus.SENT)
            occ.sent_at = now
        db.commit()

    def _publish_play(self, occ: Occurrence, bc: Broadcast, resolved: Resolved,
                      body: PlayBody, expires: datetime) -> bool:
        """One signed ``play`` per covering topic. An emergency's chunks go out retained
        just before it (no request round trip) and to its areas straight after it
        (protocol §6). False when a publish failed."""
        if body.content is None:  # a stream's frames come from its session; a line, from
            ok = True             # the board itself: no chunks to push either way
            for topic in resolved.topics:
                ok &= self._publish_command("play", topic, body, expires, occ.id)
            if body.stream is not None and self.streams is not None:
                self.streams.ensure(occ.id, bc.content, body.stream, occ.start_at)
            return ok
        sha = (occ.content or bc.content).sha256
        emergency = bc.priority == "emergency"
        if emergency:
            self.content.push(sha, keep_s=(expires - utcnow()).total_seconds())
        ok = True
        for topic in resolved.topics:
            ok &= self._publish_command("play", topic, body, expires, occ.id)
        if emergency:
            self.content.push_to_areas(sha, resolved.areas)
        return ok

    def _volume_cap(self, db: Session, bc: Broadcast, occ: Occurrence,
                    areas: Iterable[str | None]) -> int | None:
        """The strictest volume cap of the areas it plays in (the areas of its clusters), at
        its start time."""
        if bc.priority == "emergency":
            return None
        zone = ZoneInfo(self.settings.timezone)
        local = occ.start_at.astimezone(zone).time()
        caps = [p.volume_cap(local) for p in area_policies(db, areas).values()]
        return min((c for c in caps if c is not None), default=None)

    def _publish_command(self, kind: str, topic: str, body: PlayBody | CancelBody,
                         expires: datetime, occurrence_id: str | None = None) -> bool:
        cid = uuid.uuid4().hex
        payload = sign_command(self.key, kind=kind, topic=topic,
                               body=body.model_dump(mode="json"), expires_at=expires,
                               command_id=cid)
        if occurrence_id:
            self._command_occurrence[cid] = (occurrence_id, topic)
            while len(self._command_occurrence) > COMMANDS_REMEMBERED:
                self._command_occurrence.pop(next(iter(self._command_occurrence)))
        self.counters[f"commands_{kind}"] += 1
        return self.publish(topic, payload, 1)

    def resend_to(self, db: Session, cluster_ids: list[str]) -> int:
        """Clusters that (re)connected, or that have not confirmed a play since the link
        returned: send each, on its own topic, what it should still play (an occurrence
        not yet over whose play it has not confirmed). Clusters ignore a play they hold."""
        if not cluster_ids:
            return 0
        now = utcnow()
        sent = 0
        for i in range(0, len(cluster_ids), 500):
            part = cluster_ids[i:i + 500]
            rows = db.scalars(
                select(Delivery).join(Occurrence)
                .where(Delivery.cluster_id.in_(part), Delivery.state.in_(("pending", "sent")),
                       Occurrence.status == OccurrenceStatus.SENT, Occurrence.ends_at > now)
            ).all()
            area_of = {cid: area for cid, area in db.execute(
                select(Cluster.id, Cluster.area_id).where(Cluster.id.in_(part)))}
            for d in rows:
                occ = d.occurrence
                bc = occ.broadcast
                if self._expiry(occ, bc) <= now:
                    continue
                cap = self._volume_cap(db, bc, occ, [area_of.get(d.cluster_id)])
                body = self._play_body(db, occ, bc, cap)
                if self._publish_command("play", topics.cluster_cmd(d.cluster_id), body,
                                         self._expiry(occ, bc), occ.id):
                    sent += 1
                    if d.state == DeliveryStatus.PENDING:
                        move(d, DeliveryStatus.SENT)
                        d.updated_at = now
                    d.error = None
        return sent

    def resume_streams(self, db: Session, now: datetime | None = None) -> int:
        """After a restart: the stream items whose slot is running (or about to) get their
        sessions back: a relay resumes live, a live voice ends cleanly."""
        if self.streams is None:
            return 0
        now = now or utcnow()
        rows = db.scalars(
            select(Occurrence).join(Occurrence.broadcast).join(Content, Broadcast.content)
            .where(Content.container == "stream", Occurrence.status == OccurrenceStatus.SENT,
                   Occurrence.ends_at > now,
                   Occurrence.start_at < now + timedelta(seconds=self.settings.dispatch_lead_s)))
        n = 0
        for occ in rows:
            body = self._play_body(db, occ, occ.broadcast)
            if body.stream is not None:
                self.streams.ensure(occ.id, occ.broadcast.content, body.stream, occ.start_at)
                n += 1
        return n

    def link_returned(self) -> None:
        """The broker link is up again (its on_connect hook): the next sweep sends what
        could not be sent, and re-sends each play no cluster has confirmed."""
        self._link_returned = True

    def retry_unsent(self, db: Session, now: datetime,
                     window: timedelta | None = timedelta(minutes=10)) -> int:
        """Occurrences whose play never reached the broker (the link was down at their
        dispatch): sent now, all clusters together, at their start if it is still ahead,
        else as soon as possible within ``late_grace_s``, else recorded missed."""
        q = select(Occurrence).where(Occurrence.status == OccurrenceStatus.PENDING)
        if window is not None:  # (the sweep: only what is due soon; a start sends them all)
            q = q.where(Occurrence.start_at <= now + window)
        pending = db.scalars(q).all()
        sent = 0
        for occ in pending:
            bc = occ.broadcast
            if bc.status not in BROADCAST_LIVE:
                continue
            if occ.content_id is None:  # a part whose audio is still being made
                if (now - occ.scheduled_at).total_seconds() > self.settings.late_grace_s:
                    self._missed(db, occ, now, "its audio was never made")
                continue
            lead = timedelta(seconds=self.settings.emergency_lead_s if bc.priority ==
                             "emergency" else self.settings.min_start_lead_s)
            if occ.start_at < now + lead:
                start = now + lead
                late = (start - occ.scheduled_at).total_seconds() > self.settings.late_grace_s
                if late or (bc.expires_at is not None and start >= bc.expires_at):
                    move(occ, OccurrenceStatus.MISSED)
                    for d in occ.deliveries:
                        if d.state in (DeliveryStatus.PENDING, DeliveryStatus.SENT):
                            move(d, DeliveryStatus.MISSED)
                            d.error, d.updated_at = ("not sent: the broker could not be "
                                                     "reached before the late-start limit"), now
                    db.commit()
                    log.warning("occurrence %s of %s missed: the broker link was down past "
                                "its late-start limit", occ.id, bc.id)
                    continue
                # late, but everywhere together: a new start (and revision, in case some
                # clusters got the first attempt's play before the link dropped)
                duration = occ.ends_at - occ.start_at
                occ.start_at, occ.ends_at = start, start + duration
                occ.revision = (occ.revision or 0) + 1
                db.commit()
            try:
                self._send(db, occ, bc)
            except TargetError as exc:  # its areas are gone: it can never be sent
                db.rollback()
                self._missed(db, occ, now, str(exc))
                continue
            sent += occ.status == OccurrenceStatus.SENT
        return sent

    def drop_part(self, occurrence_id: str, reason: str) -> None:
        """A reserved part that will have no audio (nothing was left to say, or making it
        failed): recorded missed with ``reason`` now, not only once it is overdue."""
        with self.sessions() as db:
            occ = db.get(Occurrence, occurrence_id)
            if occ is not None and occ.status == OccurrenceStatus.PENDING and \
                    occ.content_id is None:
                self._missed(db, occ, utcnow(), reason)

    def _missed(self, db: Session, occ: Occurrence, now: datetime, reason: str) -> None:
        """An occurrence that can never be sent (its areas are gone, its audio never came):
        recorded missed with the reason, never silently; a one-off broadcast whose last
        open occurrence this was is over."""
        move(occ, OccurrenceStatus.MISSED)
        for d in occ.deliveries:
            if d.state in (DeliveryStatus.PENDING, DeliveryStatus.SENT):
                move(d, DeliveryStatus.MISSED)
                d.error, d.updated_at = f"not sent: {reason}"[:256], now
        bc = occ.broadcast
        if bc.status == BroadcastStatus.ACTIVE and not bc.recurrence and not any(
                o.status in OCCURRENCE_OPEN for o in bc.occurrences):
            move(bc, BroadcastStatus.COMPLETED)
        db.commit()
        log.error("occurrence %s of %s missed: %s", occ.id, occ.broadcast_id, reason)

    def _resend_unconfirmed(self, db: Session, now: datetime) -> int:
        """After the link returned: each up cluster whose delivery of an occurrence not yet
        over is still unconfirmed (pending or sent) gets the play again, on its own topic."""
        rows = db.execute(
            select(Delivery.cluster_id).join(Occurrence).join(
                Cluster, Cluster.id == Delivery.cluster_id)
            .where(Delivery.state.in_(("pending", "sent")),
                   Occurrence.status == OccurrenceStatus.SENT, Occurrence.ends_at > now,
                   Cluster.state.in_(UP_STATES)).distinct()).scalars().all()
        return self.resend_to(db, sorted(rows))

    def recover(self) -> int:
        """After a restart: record what the spool holds (aired before a crash let it be
        recorded), then send occurrences created but never sent (crash in between)."""
        self.recover_spool()
        with self.sessions() as db:
            return self.retry_unsent(db, utcnow(), window=None)

    # --- update ---------------------------------------------------------------------------

    def update_content(self, db: Session, bc: Broadcast, content: Content) -> int:
        """Replace what ``bc`` plays wherever it has not started yet: later slots, and
        every cluster that has not begun the current one (clusters swap an item they hold
        for a play with a higher revision). Returns the occurrences re-sent."""
        now = utcnow()
        bc.content_id, bc.revision = content.id, (bc.revision or 0) + 1
        bc.content = content
        changed: list[Occurrence] = []
        for occ in bc.occurrences:
            if occ.status not in OCCURRENCE_OPEN or not any(
                    d.state in ("pending", "sent", "received", "ready") for d in occ.deliveries):
                continue  # over, or it played (or is playing) everywhere: nothing to replace
            occ.content_id, occ.content = content.id, content
            if occ.start_at > now:
                occ.ends_at = occ.start_at + timedelta(milliseconds=content.duration_ms)
            changed.append(occ)
        self._reissue(db, changed)
        return sum(o.status == OccurrenceStatus.SENT for o in changed)

    def _resend(self, db: Session, occ: Occurrence, bc: Broadcast) -> None:
        """Publish ``occ`` again (a new revision) to every topic of its targets."""
        resolved = resolve(db, bc.target.areas, bc.target.clusters)
        body = self._play_body(db, occ, bc, self._volume_cap(db, bc, occ, resolved.cluster_areas))
        expires = self._expiry(occ, bc)
        for topic in resolved.topics:
            self._publish_command("play", topic, body, expires, occ.id)

    # --- cancel ---------------------------------------------------------------------------

    def cancel(self, db: Session, bc: Broadcast) -> None:
        """Record the cancel, then send it: a cancel on the air is never one the database
        does not know (a commit that fails leaves everything as it was, and the caller is
        told). A cancel the link could not take is sent again by :meth:`retry_cancels`."""
        now = utcnow()
        move(bc, BroadcastStatus.CANCELLED)
        bc.cancelled_at = now
        sends: list[tuple[str, datetime, list[str]]] = []
        for occ in bc.occurrences:
            if occ.status not in (OccurrenceStatus.SENT, OccurrenceStatus.PENDING):
                continue
            # a pending occurrence may be mid-send in the scheduler's thread: cancel it on
            # the wire too (clusters ignore a cancel for an occurrence they never got)
            resolved = resolve(db, bc.target.areas, bc.target.clusters)
            exp = max(occ.ends_at, now) + timedelta(seconds=self.settings.late_grace_s)
            sends.append((occ.id, exp, resolved.topics))
            move(occ, OccurrenceStatus.CANCELLED)
            if self.streams is not None:
                self.streams.stop(occ.id, "cancelled")
            waiting = {d.cluster_id for d in occ.deliveries
                       if d.state in ("sent", "received", "ready", "playing", "preempted")}
            if waiting:  # confirmed only by the cluster's own "cancelled" report
                self._unconfirmed_cancels[occ.id] = (waiting, exp)
            for d in occ.deliveries:
                if d.state in (DeliveryStatus.PENDING, DeliveryStatus.SENT,
                               DeliveryStatus.RECEIVED, DeliveryStatus.READY):
                    move(d, DeliveryStatus.CANCELLED)
                    d.updated_at = now
        try:
            db.commit()
        except Exception:
            for occ_id, _exp, _topics in sends:
                self._unconfirmed_cancels.pop(occ_id, None)
            raise
        for occ_id, exp, cmd_topics in sends:
            for topic in cmd_topics:
                self._publish_command("cancel", topic, CancelBody(occurrence_id=occ_id), exp)

    def retry_cancels(self, now: datetime) -> int:
        """Re-send a cancel to each cluster that has not confirmed it (its own topic)."""
        sent = 0
        for occ_id, (clusters, until) in list(self._unconfirmed_cancels.items()):
            if now >= until or not clusters:
                del self._unconfirmed_cancels[occ_id]
                continue
            for cid in clusters:
                self._publish_command("cancel", topics.cluster_cmd(cid),
                                      CancelBody(occurrence_id=occ_id), until)
                sent += 1
        return sent

    # --- reports from clusters ---------------------------------------------------------------

    def begin_batch(self) -> None:
        """A new ingest transaction: forget the deliveries loaded for the previous one."""
        self._batch = {}

    def write_batch(self, db: Session) -> int:
        """Write the deliveries this batch's reports changed: one executemany in id order
        (the order every writer uses, so PostgreSQL transactions cannot deadlock on them)
        instead of the ORM's unit of work, which cost ~0.3 ms a report. Returns rows."""
        rows = sorted((r for _, by_cluster in (self._batch or {}).values()
                       for r in by_cluster.values() if r is not None and r.dirty),
                      key=lambda r: r.id)
        if rows:
            db.execute(_REPORT_UPDATE, [r.params() for r in rows])
            for r in rows:
                r.dirty = False
        return len(rows)

    def end_batch(self) -> None:
        self._batch = None

    def load_deliveries(self, db: Session, wanted: dict[str, set[str]]) -> None:
        """Load, for this batch, the deliveries that its reports are about (occurrence id
        -> cluster ids): one query per occurrence for all its clusters in the batch. Only
        those rows, read fresh in this transaction: loading all of an emergency's thousands
        of deliveries for every small batch of its reports was most of the ingest's work."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("delivery reports are applied between begin_batch and "
                               "write_batch")
        for occurrence_id, cluster_ids in wanted.items():
            entry = batch.get(occurrence_id)
            if entry is None:
                revision = db.scalar(select(Occurrence.revision).where(
                    Occurrence.id == occurrence_id)) or 0
                entry = batch[occurrence_id] = (revision, {})
            revision, by_cluster = entry
            missing = sorted(c for c in cluster_ids if c not in by_cluster)
            for i in range(0, len(missing), 500):  # (bounded IN lists)
                part = missing[i:i + 500]
                got = {r.cluster_id: _Report(r.id, r.cluster_id, r.state, r.started_at,
                                             r.finished_at, r.error, r.revision, r.assumed,
                                             r.corrected_from, r.corrected_at, r.stream,
                                             occ_revision=revision)
                       for r in db.execute(_REPORTS.where(Delivery.occurrence_id == occurrence_id,
                                                          Delivery.cluster_id.in_(part)))}
                by_cluster.update((c, got.get(c)) for c in part)  # None: no such delivery

    def _delivery(self, db: Session, occurrence_id: str, cluster_id: str) -> _Report | None:
        """The delivery a report is about, as loaded for this batch (loaded now if the
        batch did not ask for it up front)."""
        entry = (self._batch or {}).get(occurrence_id)
        if entry is None or cluster_id not in entry[1]:
            self.load_deliveries(db, {occurrence_id: {cluster_id}})
            entry = self._batch[occurrence_id]  # type: ignore[index]
        return entry[1][cluster_id]

    def on_delivery(self, db: Session, ev: DeliveryEvent) -> None:
        d = self._delivery(db, ev.occurrence_id, ev.cluster_id)
        if d is None:
            self.counters["delivery_unknown"] += 1
            return
        new = ev.state.value
        if ev.revision is not None and new in ("received", "ready") and \
                ev.revision < d.occ_revision:
            return  # about the version before an update or a move: it must take the new one
        if ev.occurrence_id in self._unconfirmed_cancels and new in ("cancelled", "played",
                                                                     "failed"):
            self._unconfirmed_cancels[ev.occurrence_id][0].discard(ev.cluster_id)
        # forward only; "cancelled" and "missed" may be the controller's assumption, and the
        # cluster's own report of what happened wins over it (states.REPORT_MOVES); so does
        # any final state the controller concluded for want of a report (``assumed``)
        here, to = DeliveryStatus(d.state), DeliveryStatus(new)
        if to not in REPORT_MOVES[here] and not (d.assumed and to in REPORTED_FINAL
                                                 and to != here):
            return
        now = utcnow()
        if here == DeliveryStatus.CANCELLED and to in (DeliveryStatus.PLAYING,
                                                       DeliveryStatus.PLAYED):
            # it aired although cancelled (a cancel that came too late, or a replay): the
            # record says so, and someone is told (the ingest raises the alert)
            self.played_after_cancel.append((ev.cluster_id, ev.occurrence_id, new))
        if here in DELIVERY_FINAL:  # a conclusion replaced by what the cluster says happened
            d.corrected_from = f"{here.value}: {d.error or ''}".strip()[:300]
            d.corrected_at, d.assumed = now, False
            self.counters["corrected"] += 1
            log.info("delivery of %s to %s corrected: %s -> %s by the cluster's report",
                     ev.occurrence_id, ev.cluster_id, here.value, new)
        d.state, d.updated_at, d.dirty = new, now, True
        if ev.state is DeliveryState.PLAYING and d.started_at is None:
            d.started_at = ev.at  # the first start; a resume keeps it
        if new in ("playing", "played") and ev.revision is not None:
            d.revision = ev.revision
        if new in ("played", "failed", "cancelled"):
            d.finished_at = ev.at
        if ev.stream is not None:  # what the board heard of a stream (§6.1)
            d.stream = ev.stream.model_dump()
        d.error = ev.reason

    def on_refused(self, db: Session, ev: RefusedEvent) -> None:
        self.counters[f"refused_{ev.reason.value}"] += 1
        sent = self._command_occurrence.get(ev.command_id or "")
        log.warning("cluster %s refused command %s on %s: %s %s", ev.cluster_id, ev.command_id,
                    ev.topic, ev.reason.value, ev.detail or "")
        if sent is None or sent[1] != ev.topic:
            # not our publish: a forged command, or ours re-published by someone else on
            # another topic (its id proves nothing then): nothing to update
            self.counters["refused_not_ours"] += 1
            return
        d = self._delivery(db, sent[0], ev.cluster_id)
        # a refusal can fail a play the cluster never confirmed, never undo one it did
        if d is not None and d.state in (DeliveryStatus.PENDING, DeliveryStatus.SENT) and \
                ev.reason.value != "replayed":
            move(d, DeliveryStatus.FAILED)
            d.updated_at, d.dirty = utcnow(), True
            d.error = f"refused: {ev.reason.value} {ev.detail or ''}".strip()[:256]

    # --- housekeeping ------------------------------------------------------------------------

    def sweep(self, db: Session, now: datetime, heard: datetime | None = None) -> None:
        """Send what the link could not take; close occurrences whose reports are overdue:
        unreported deliveries are concluded missed or failed, as the controller's
        assumption (``assumed``), which a genuine report arriving later corrects. Overdue
        is counted up to ``heard`` (what the clusters said is applied up to then), so a
        report waiting behind a backlog, or behind a database stall, is not missing."""
        if self.link_up():
            if self._link_returned:
                self._link_returned = False
                n = self._resend_unconfirmed(db, now)
                if n:
                    log.info("link back: %d unconfirmed play(s) sent again", n)
            self.retry_unsent(db, now)
        # every cluster reported a final state: the occurrence is complete now
        done = select(Occurrence).where(
            Occurrence.status == OccurrenceStatus.SENT, Occurrence.start_at <= now,
            ~Occurrence.deliveries.any(Delivery.state.not_in(tuple(TERMINAL))))
        for occ in db.scalars(done):
            self._complete(occ)
        limit = (heard or now) - timedelta(seconds=self.settings.report_grace_s)
        for occ in db.scalars(select(Occurrence).where(Occurrence.status == OccurrenceStatus.SENT,
                                                       Occurrence.ends_at < limit)):
            offline = set(db.scalars(select(Cluster.id).where(
                Cluster.id.in_([d.cluster_id for d in occ.deliveries]),
                Cluster.state.not_in(UP_STATES))))
            for d in occ.deliveries:
                where = "; cluster offline" if d.cluster_id in offline else ""
                if d.state in (DeliveryStatus.PENDING, DeliveryStatus.SENT):
                    move(d, DeliveryStatus.MISSED)
                    d.error = (d.error or "no report from the cluster") + where
                    d.assumed = True
                elif d.state not in TERMINAL:
                    last = d.state
                    move(d, DeliveryStatus.FAILED)
                    d.error = f"no final report (last: {last}){where}"
                    d.assumed = True
                d.updated_at = now
            self._complete(occ)
        for bc in db.scalars(select(Broadcast).where(Broadcast.status == BroadcastStatus.ACTIVE,
                                                     Broadcast.recurrence.is_not(None))):
            if bc.expires_at is not None and bc.expires_at < now:
                move(bc, BroadcastStatus.COMPLETED)
        for bc in db.scalars(select(Broadcast).where(Broadcast.status == BroadcastStatus.INBOX,
                                                     Broadcast.expires_at < now)):
            move(bc, BroadcastStatus.EXPIRED)
            bc.decision_note = "expired in the inbox, never scheduled"
        waiting = select(Broadcast).where(Broadcast.status == BroadcastStatus.PENDING_APPROVAL)
        for bc in db.scalars(waiting):
            if self.next_slot(bc, now) is None:
                move(bc, BroadcastStatus.EXPIRED)
                bc.decision_note = "not approved before its start"

    @staticmethod
    def _complete(occ: Occurrence) -> None:
        move(occ, OccurrenceStatus.COMPLETED)
        bc = occ.broadcast
        more = any(o.status in OCCURRENCE_OPEN for o in bc.occurrences if o is not occ)
        if bc.status == BroadcastStatus.ACTIVE and not bc.recurrence and not more:
            move(bc, BroadcastStatus.COMPLETED)

    def next_slot(self, bc: Broadcast, after: datetime) -> datetime | None:
        if bc.recurrence:
            nxt = Recurrence.model_validate(bc.recurrence).next_after(after)
            if nxt is not None and bc.expires_at is not None and nxt >= bc.expires_at:
                return None
            return nxt
        return bc.start_at if bc.start_at and bc.start_at > after else None
