"""The ingest thread: drains the MQTT inbox, validates each message at the edge, applies it
to health and deliveries in batched transactions, and runs the periodic sweeps.

Invalid messages are dropped and counted by reason (``rejected``); nothing here lets one bad
message stop the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from controller.broadcasting.content_server import ContentServer
from controller.broadcasting.dispatcher import Dispatcher
from controller.db.models import utcnow
from controller.fleet.actions import ActionService
from controller.fleet.availability import check_upcoming_slots
from controller.fleet.health import HealthTracker
from controller.fleet.history import TelemetryHistory
from controller.fleet.tampering import RefusalWatch
from controller.limits import RateLimit
from controller.storage import StorageMonitor, is_storage_error
from controller.transport.link import Inbound, Link
from devices import topics
from devices.messages import (
    AckEvent,
    Birth,
    ContentRequest,
    DeliveryEvent,
    MessageError,
    RefusedEvent,
    parse_event,
    parse_status,
    parse_telemetry,
)
from devices.signing import sign_command

#: an event as parse_event returns it
AnyEvent = DeliveryEvent | RefusedEvent | ContentRequest | AckEvent

log = logging.getLogger(__name__)

__all__ = ["Ingest"]

#: write-behind of heartbeats: at most once a second while messages keep coming. Each flush
#: writes every cluster seen since the last one; flushing on every short lull in the inbox
#: (as it once did, up to 4 times a second) rewrote the same rows several times a second
#: under load for nothing: health timeouts run on the in-memory views, and the API's
#: last_seen may lag by this much.
FLUSH_S = 1.0
#: ... but once the inbox has stayed empty for a whole wait (the end of a burst, or a quiet
#: network), what is held is written at once: there is time for it, and nothing waits.
IDLE_FLUSH_S = 0.1


class _Stopping(Exception):
    """The controller stops while a batch waits for the database."""


class Ingest:
    def __init__(self, link: Link, sessions: sessionmaker[Session], health: HealthTracker,
                 dispatcher: Dispatcher, content: ContentServer, actions: ActionService,
                 history: TelemetryHistory, batch: int = 2000,
                 storage: StorageMonitor | None = None):
        self.link = link
        self.sessions = sessions
        self.health = health
        self.dispatcher = dispatcher
        self.content = content
        self.actions = actions
        self.history = history
        self.batch = batch
        self.storage = storage or dispatcher.storage
        self.retries = 0  # batch attempts the database refused
        self._last_slow_sweep = 0.0
        self._last_prune = 0.0
        self.rejected: Counter[str] = Counter()
        self.processed = 0
        self.persisted = 0  # messages whose effects are committed (incl. write-behind)
        self._last_flush = 0.0
        self._last_cancel_retry = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="loa-ingest", daemon=True)
        self._last_sweep = 0.0
        self._rebirth_sent: dict[str, float] = {}
        self.refusals = RefusalWatch(health.alerts)
        self.requests = RateLimit()
        self._requests_lock = threading.Lock()  # (Link.early may run in several threads)

    def start(self) -> None:
        with self.sessions() as db:
            self.health.load(db)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with self.sessions() as db:  # keep the open telemetry buckets and last heartbeats
                self.health.flush(db)
                self.history.flush(db, utcnow(), force=True)
                db.commit()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            log.error("last heartbeats not written at stop: %s", str(exc).splitlines()[0])

    def _loop(self) -> None:
        while not self._stop.is_set():
            msgs = self.link.inbox.take(self.batch, timeout=0.05)
            try:
                if msgs:
                    self._apply(msgs)
                # write-behind of heartbeats: once a second, or when the inbox is idle
                since = time.monotonic() - self._last_flush
                if self.persisted < self.processed and (
                        since >= FLUSH_S or (not msgs and since >= IDLE_FLUSH_S)):
                    self._flush_heartbeats()
                self.content.flush()
                if time.monotonic() - self._last_sweep >= 1.0:
                    self._sweep()
            except Exception as exc:
                if is_storage_error(exc):
                    self.storage.failed(exc)  # (logged there when it starts)
                    self._last_sweep = time.monotonic()
                else:
                    log.exception("ingest housekeeping failed; continuing")

    def _flush_heartbeats(self) -> None:
        upto = self.processed
        with self.sessions() as db:
            self.health.flush(db)
            db.commit()
        self.persisted = upto
        self._last_flush = time.monotonic()

    def _reject(self, reason: str, topic: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        log.debug("dropped message on %s: %s %s", topic, reason, detail[:200])

    def _apply(self, msgs: list[Inbound]) -> None:
        """Apply a batch in one transaction, then acknowledge its QoS 1 messages to the
        broker. A batch the database refuses (down, full, read-only, a lost deadlock) is
        retried until it commits, never dropped: until then nothing is acknowledged, and
        the broker's session holds the rest. A batch that fails otherwise (a message that
        trips a bug) is applied again message by message: only the message that fails is
        dropped, and counted ("error"); the rest of its batch is not lost with it."""
        try:
            self._apply_until_committed(msgs)
        except _Stopping:
            return  # not acknowledged: delivered again from the session on the next start
        except Exception:
            log.exception("ingest batch of %d messages failed%s", len(msgs),
                          "; applying them one by one" if len(msgs) > 1 else "")
            self._resync()
            if len(msgs) == 1:
                self._reject("error", msgs[0].topic)
            else:
                for m in msgs:
                    try:
                        self._apply_until_committed([m])
                    except _Stopping:
                        return
                    except Exception as exc:
                        log.exception("message on %s dropped", m.topic)
                        self._reject("error", m.topic, repr(exc))
                        self._resync()
        self.link.ack(msgs)

    def _apply_until_committed(self, msgs: list[Inbound]) -> None:
        delay = 0.05
        while True:
            try:
                self._apply_once(msgs)
                return
            except Exception as exc:
                if not is_storage_error(exc):
                    raise
                problem = self.storage.failed(exc)
                self.retries += 1
                # (no sweep runs meanwhile; what arrives waits in the inbox with its
                # arrival, and the sweeps after the stall judge silence only up to that:
                # the delay was the controller's, not the clusters')
                if self.retries % 20 == 1:
                    log.warning("ingest batch of %d not committed (%s: %s); retrying",
                                len(msgs), problem.reason, str(exc).splitlines()[0][:120])
                self._resync()
                self.content.flush()  # (chunks asked for meanwhile still go out)
                if self._stop.wait(delay):
                    raise _Stopping() from exc
                delay = min(delay * 2, 2.0)

    def serve_early(self, topic: str, payload: bytes) -> None:
        """``Link.early``, in the network thread: a content request is served as it
        arrives, and only there (it needs no database: a board fetching what it must play
        waits neither behind batches of reports nor behind a database that refuses
        writes; with 10,000 boards asking together, requests that waited for their
        batches reached the content server 12 s late). Its batch only acknowledges it."""
        if not topic.endswith("/event") or b"content_request" not in payload:
            return
        try:
            ev = parse_event(payload)
        except MessageError:
            return  # rejected (and counted) when its batch is applied
        t = topics.parse_cluster_topic(topic)
        if isinstance(ev, ContentRequest) and t is not None and t.cluster_id == ev.cluster_id:
            with self._requests_lock:
                allowed = self.requests.allow(ev.cluster_id)
            if allowed:
                self.content.request(ev.sha256, ev.missing)
            else:  # one board asking again and again: not amplified by us
                self.rejected["content_request_limited"] += 1

    def _resync(self) -> None:
        """After a rolled-back batch: the in-memory health views and alert index had taken
        part of it; write the heartbeats held behind, then reload both from the database."""
        try:
            self._flush_heartbeats()
            with self.sessions() as db:
                self.health.load(db)
        except Exception:
            log.exception("could not reload health state after a failed batch")

    def _apply_once(self, msgs: list[Inbound]) -> None:
        # reports and births wait while an immediate emergency is between its publish and
        # its rows being committed (Dispatcher.dispatch_immediate): a report must find its
        # delivery, and a cluster coming online must be sent what it missed. So do they
        # while an airing sent before it was recorded is not yet written (spool.py).
        # Heartbeats never wait for either.
        if not all(m.topic.endswith("/telemetry") for m in msgs):
            with self.dispatcher.gate:
                if self.dispatcher.unrecorded:
                    with self.sessions() as db:
                        self.dispatcher.record_unrecorded(db)
                self._apply_batch(msgs)
        else:
            self._apply_batch(msgs)

    def _apply_batch(self, msgs: list[Inbound]) -> None:
        online: list[str] = []
        rebirth: set[str] = set()
        self.dispatcher.begin_batch()
        # one clock reading per batch: a batch is what arrived within a few milliseconds
        now = utcnow()
        with self.sessions() as db:
            # one flush at commit: rows are then updated in primary-key order, the same
            # order every other writer uses, so transactions cannot deadlock on them
            db.autoflush = False
            events = self._parse_events(db, msgs)
            for i, m in enumerate(msgs):
                try:
                    self._one(db, m, now, online, rebirth, events.get(i))
                except MessageError as exc:
                    self._reject("invalid", m.topic, str(exc))
            self.dispatcher.write_batch(db)  # before resend_to reads deliveries
            self.dispatcher.resend_to(db, online)
            db.commit()
        self.processed += len(msgs)
        self.dispatcher.end_batch()
        for cid in rebirth:
            self._request_rebirth(cid)

    def _parse_events(self, db: Session, msgs: list[Inbound]) -> dict[int, AnyEvent]:
        """The batch's events parsed up front (index in the batch -> event), the
        deliveries they report on loaded in one query per occurrence, and the rows of the
        clusters whose status or heartbeat will read one. What does not parse is left to
        ``_one``, which rejects it."""
        events: dict[int, AnyEvent] = {}
        wanted: dict[str, set[str]] = {}
        rows: set[str] = set()
        for i, m in enumerate(msgs):
            if not m.topic.endswith("/event"):
                t = topics.parse_cluster_topic(m.topic)
                if t is not None and t.kind in ("status", "telemetry") and \
                        self.health.needs_row(t.cluster_id, t.kind):
                    rows.add(t.cluster_id)
                continue
            try:
                ev = events[i] = parse_event(m.payload)
            except MessageError:
                continue
            if isinstance(ev, DeliveryEvent):
                wanted.setdefault(ev.occurrence_id, set()).add(ev.cluster_id)
        if wanted:
            self.dispatcher.load_deliveries(db, wanted)
        if rows:
            self.health.preload(db, rows)
        return events

    def _one(self, db: Session, m: Inbound, now: datetime, online: list[str],
             rebirth: set[str], event: AnyEvent | None = None) -> None:
        t = topics.parse_cluster_topic(m.topic)
        if t is None or t.kind in ("cmd", "time"):  # (time: answered by TimeService)
            self._reject("bad_topic", m.topic)
            return
        if t.kind == "status":
            if not m.payload:  # retained message cleared
                return
            st = parse_status(m.payload)
            if st.cluster_id != t.cluster_id:
                self._reject("id_mismatch", m.topic)
                return
            if isinstance(st, Birth):
                if self.health.on_birth(db, st, now):
                    online.append(st.cluster_id)
            else:
                self.health.on_death(db, st, now)
        elif t.kind == "telemetry":
            tm = parse_telemetry(m.payload)
            if tm.cluster_id != t.cluster_id:
                self._reject("id_mismatch", m.topic)
                return
            if self.health.note_seq(tm.cluster_id, tm.seq):
                rebirth.add(tm.cluster_id)
            came_online, needs_rebirth = self.health.on_telemetry(db, tm, now)
            self.history.add(tm.cluster_id, now, tm)
            if came_online:
                online.append(tm.cluster_id)
            if needs_rebirth:
                rebirth.add(tm.cluster_id)
        else:
            ev = event if event is not None else parse_event(m.payload)
            if ev.cluster_id != t.cluster_id:
                self._reject("id_mismatch", m.topic)
                return
            if self.health.note_seq(ev.cluster_id, ev.seq):
                rebirth.add(ev.cluster_id)
            if isinstance(ev, DeliveryEvent):
                self.dispatcher.on_delivery(db, ev)
                while self.dispatcher.played_after_cancel:
                    cid, occ, state = self.dispatcher.played_after_cancel.pop()
                    self.health.alerts.sync(db, cluster_id=cid, area_id=None, conditions={
                        ("played_after_cancel", ""): f"{cid} reports {state} for occurrence "
                        f"{occ}, which was cancelled: it aired after its cancel"},
                        now=now, hold_s=3600, codes=["played_after_cancel"])
            elif isinstance(ev, RefusedEvent):
                self.refusals.note(db, ev.cluster_id, ev.reason.value, now)
                if not self.actions.on_refused(db, ev.command_id, ev.cluster_id, ev.reason.value):
                    self.dispatcher.on_refused(db, ev)
                else:
                    self.dispatcher.counters[f"refused_{ev.reason.value}"] += 1
            elif isinstance(ev, AckEvent) and not self.actions.on_ack(db, ev):
                self._reject("unknown_command", m.topic)
            # (a ContentRequest was served as it arrived: serve_early)

    def _request_rebirth(self, cluster_id: str) -> None:
        last = self._rebirth_sent.get(cluster_id, 0.0)
        if time.monotonic() - last < 10.0:  # one request per cluster per 10 s, never a storm
            return
        self._rebirth_sent[cluster_id] = time.monotonic()
        topic = topics.cluster_cmd(cluster_id)
        payload = sign_command(self.dispatcher.key, kind="rebirth", topic=topic, body={},
                               expires_at=utcnow() + timedelta(seconds=60))
        self.link.publish(topic, payload, 1)

    def _probe_storage(self) -> None:
        """While writes fail: does the database take one now? (A write that changes
        nothing, but that SQLite and PostgreSQL both have to journal.)"""
        with self.sessions() as db:
            db.execute(text("UPDATE alembic_version SET version_num = version_num"))
            db.commit()
        self.storage.ok()

    def heard(self, now: datetime) -> datetime:
        """Up to when what the clusters said has been applied: the arrival of the oldest
        message still waiting in the inbox (a backlog, what came during a database stall),
        or ``now`` when none waits. Silence (a heartbeat's, a report's, an action's
        outcome) is judged up to this moment, never up to ``now``."""
        waiting = self.link.inbox.oldest_arrival()
        return min(now, datetime.fromtimestamp(waiting, UTC)) if waiting is not None else now

    def _sweep(self) -> None:
        self._last_sweep = time.monotonic()
        now = utcnow()
        if self.storage.problem is not None:
            self._probe_storage()
        if self.storage.problem is None:
            self.storage.record(self.sessions)
        if self.dispatcher.unrecorded:  # (also before each batch of reports)
            with self.dispatcher.gate, self.sessions() as db:
                self.dispatcher.record_unrecorded(db)
        slow = time.monotonic() - self._last_slow_sweep >= 10.0
        heard = self.heard(now)
        with self.sessions() as db:  # (heartbeats are written behind by _loop, not here)
            self.health.sweep(db, now, heard)
            self.dispatcher.sweep(db, now, heard)
            self.actions.sweep(db, now, heard)
            self.refusals.sweep(db, now)
            if time.monotonic() - self._last_cancel_retry >= 2.0:
                self._last_cancel_retry = time.monotonic()
                self.dispatcher.retry_cancels(now)
            if slow:
                self._last_slow_sweep = time.monotonic()
                self.history.flush(db, now)
                check_upcoming_slots(db, self.dispatcher, self.health, now)
            if time.monotonic() - self._last_prune >= 3600:
                self._last_prune = time.monotonic()
                self.history.prune(db, now)
            db.commit()
