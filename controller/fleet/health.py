"""Cluster health: online / degraded (with causes) / offline / unprovisioned.

Connection state and liveness are kept apart: a cluster is up only while its heartbeats
arrive; the broker's keep-alive is not counted. A Will whose bd_seq is not the current
birth's is late and ignored (Sparkplug B rule), so it cannot mark a live cluster offline.
Degraded comes from telemetry against the area's thresholds (``controller.fleet.causes``). Every
state change is recorded (availability reports) and mirrored into alerts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, selectinload

from controller.db.models import Area, Cluster, Speaker, StateTransition, table_of
from controller.fleet.alerts import AlertManager, WebhookSender
from controller.fleet.causes import Cause, causes_of
from controller.fleet.thresholds import Thresholds, effective
from devices.messages import Birth, Death, Telemetry

log = logging.getLogger(__name__)

_HEARTBEAT_UPDATE = (update(table_of(Cluster)).where(table_of(Cluster).c.id == bindparam("cid"))
                     .values(last_seen=bindparam("last_seen"), last_seq=bindparam("last_seq"),
                             telemetry=bindparam("telemetry"), firmware=bindparam("firmware")))

__all__ = ["CAUSE_CODES", "STATE_REASONS", "UP_STATES", "HealthTracker", "View", "state_reason",
           "stored_telemetry"]

#: why a cluster entered its state: the code stored (``Cluster.state_reason``) and its English
#: text; ``degraded``'s detail is its list of causes, each with its own code
STATE_REASONS = {
    "birth": "came online (birth)",
    "heartbeat": "heartbeats resumed",
    "last_will": "link lost (last will)",
    "heartbeat_timeout": "heartbeat timeout",
    "degraded": "degraded",
}


def state_reason(code: str | None) -> str | None:
    """The English text of a stored state reason (a row written before codes: as stored)."""
    return STATE_REASONS.get(code, code) if code else None


def stored_telemetry(t: Telemetry | dict | None) -> dict | None:  # type: ignore[type-arg]
    """A heartbeat as stored and served (JSON-ready, without the envelope fields). A view
    keeps the validated message itself; it is dumped only when written (write-behind)."""
    if isinstance(t, Telemetry):
        return t.model_dump(mode="json", exclude={"v", "cluster_id"})
    return t

UP_STATES = ("online", "degraded")
#: unknown devices kept in the registry (listed to adopt or dismiss); past that, ignored
MAX_UNREGISTERED = 500
CAUSE_CODES = ("speaker_open", "speaker_short", "amp_overheat", "weak_signal", "on_battery",
               "battery_low", "clock_drift", "storage_low")


@dataclass(slots=True)
class View:
    state: str
    bd_seq: int | None
    last_seen: datetime | None
    heartbeat_s: int
    last_seq: int | None
    area_id: str | None = None
    causes: tuple[Cause, ...] = ()
    provisioned: bool = True
    speakers: tuple[tuple[int, str], ...] = ()
    telemetry: Telemetry | dict | None = None  # type: ignore[type-arg]  # see stored_telemetry
    firmware: str | None = None


class HealthTracker:
    def __init__(self, timeout_factor: float = 1.5, default_heartbeat_s: int = 30,
                 alerts: AlertManager | None = None):
        self.timeout_factor = timeout_factor
        self.default_heartbeat_s = default_heartbeat_s
        self.alerts = alerts or AlertManager(WebhookSender([]))
        self.views: dict[str, View] = {}
        self.counters: Counter[str] = Counter()
        self._thresholds: dict[str | None, Thresholds] = {}
        self._dirty: set[str] = set()  # clusters whose heartbeat fields await write-behind

    def load(self, db: Session) -> None:
        for c in db.scalars(select(Cluster).options(selectinload(Cluster.speakers))):
            self.views[c.id] = View(
                c.state, c.bd_seq, c.last_seen, c.heartbeat_s or self.default_heartbeat_s,
                c.last_seq, c.area_id,
                tuple(Cause(**x) for x in c.causes or []), c.provisioned,
                tuple((s.index, s.state) for s in c.speakers), c.telemetry, c.firmware)
        self.alerts.load(db)

    def flush(self, db: Session) -> int:
        """Write the heartbeat fields of clusters seen since the last flush, in one bulk
        UPDATE (a heartbeat alone costs no database round trip). Returns rows written."""
        if not self._dirty:
            return 0
        rows = []
        for cid in self._dirty:
            v = self.views.get(cid)
            if v is not None and v.provisioned:
                rows.append({"cid": cid, "last_seen": v.last_seen, "last_seq": v.last_seq,
                             "telemetry": stored_telemetry(v.telemetry),
                             "firmware": v.firmware})
        self._dirty.clear()
        if rows:  # one executemany of a plain UPDATE, not the ORM's bulk path per row
            db.execute(_HEARTBEAT_UPDATE, rows)
        return len(rows)

    # --- thresholds ------------------------------------------------------------------------

    def invalidate_thresholds(self) -> None:
        self._thresholds = {}

    def thresholds(self, db: Session, area_id: str | None) -> Thresholds:
        th = self._thresholds.get(area_id)
        if th is None:
            chain: list[dict | None] = []  # type: ignore[type-arg]
            cur, seen = area_id, set()
            while cur is not None and cur not in seen:
                seen.add(cur)
                area = db.get(Area, cur)
                if area is None:
                    break
                chain.append(area.thresholds)
                cur = area.parent_id
            th = self._thresholds[area_id] = effective(list(reversed(chain)))
        return th

    # --- state -------------------------------------------------------------------------------

    def needs_row(self, cluster_id: str, kind: str) -> bool:
        """Whether a message of ``kind`` (status, telemetry) from ``cluster_id`` will read
        the cluster's row: every status does; a heartbeat only off the fast path (a cluster
        not up, or unknown to the views)."""
        if kind == "status":
            return True
        v = self.views.get(cluster_id)
        return v is None or not v.provisioned or v.state not in UP_STATES

    def preload(self, db: Session, cluster_ids: Iterable[str]) -> list[Cluster]:
        """Load the rows (and speakers) of these clusters together, into ``db``'s identity
        map, where each message about one finds it: 10,000 clusters connecting at once
        cost a few queries each, one after another, and the inbox fell a minute behind."""
        ids = sorted(cluster_ids)
        return [c for i in range(0, len(ids), 500)
                for c in db.scalars(select(Cluster).where(Cluster.id.in_(ids[i:i + 500]))
                                    .options(selectinload(Cluster.speakers)))]

    def _cluster(self, db: Session, cluster_id: str, now: datetime) -> Cluster | None:
        """The cluster a message is from; None for a retired board (it is not heard) and
        for an unknown device past the number kept (a flood of made-up ids)."""
        c = db.get(Cluster, cluster_id)
        if c is not None and c.retired_at is not None:
            self.counters["retired_heard"] += 1
            return None
        if c is None and (db.scalar(select(func.count()).select_from(Cluster).where(
                Cluster.provisioned.is_(False), Cluster.retired_at.is_(None))) or 0) \
                >= MAX_UNREGISTERED:
            self.counters["unprovisioned_dropped"] += 1
            return None
        if c is None:  # a device we do not know: keep it visible, never target it
            c = Cluster(id=cluster_id, name=cluster_id, provisioned=False,
                        state="unprovisioned", state_since=now)
            db.add(c)
            db.flush()
            log.warning("unprovisioned device %s announced itself", cluster_id)
            self.counters["unprovisioned"] += 1
            self.alerts.sync(db, cluster_id=cluster_id, area_id=None, now=now, hold_s=0,
                             conditions={("unprovisioned", ""): f"unknown device {cluster_id} "
                                         "connected; register it or revoke its credentials"},
                             codes=["unprovisioned"])
        return c

    def _set_state(self, db: Session, c: Cluster, state: str, now: datetime,
                   reason: str | None) -> None:
        if c.state != state:
            log.info("cluster %s: %s -> %s (%s)", c.id, c.state, state, reason or "")
            was_up = c.state in UP_STATES
            c.state = state
            c.state_since = now
            if was_up != (state in UP_STATES) or not db.scalar(
                    select(StateTransition.id).where(StateTransition.cluster_id == c.id).limit(1)):
                db.add(StateTransition(cluster_id=c.id, at=now, state=state, reason=reason))
            th = self.thresholds(db, c.area_id)
            offline = {("offline", ""): f"offline: {state_reason(reason)}"} \
                if state == "offline" else {}
            self.alerts.sync(db, cluster_id=c.id, area_id=c.area_id, conditions=offline,
                             now=now, hold_s=th.resolve_hold_s, codes=["offline"])
        c.state_reason = reason
        v = self.views.get(c.id)
        if v is not None:
            v.state = state

    def _up_state(self, db: Session, c: Cluster, now: datetime, reason: str) -> None:
        """online or degraded, from the causes last computed."""
        v = self.views.get(c.id)
        causes = v.causes if v else ()
        if causes:
            self._set_state(db, c, "degraded", now, "degraded")
        else:
            self._set_state(db, c, "online", now, reason)

    def on_birth(self, db: Session, birth: Birth, now: datetime) -> bool:
        """Returns True for a provisioned cluster: a birth is a new connection (after a
        broker restart, one the controller may not have seen drop), and whatever was
        published for the cluster meanwhile may not have reached it."""
        c = self._cluster(db, birth.cluster_id, now)
        if c is None:
            return False
        was_up = c.state in UP_STATES
        c.bd_seq = birth.bd_seq
        c.last_seen = now
        c.last_seq = None  # the next message sets the baseline
        c.firmware = birth.firmware
        c.heartbeat_s = birth.heartbeat_s
        self._update_speakers(c, [(s.index, s.state.value) for s in birth.speakers])
        old = self.views.get(c.id)
        self.views[c.id] = View(c.state, c.bd_seq, now, c.heartbeat_s, None, c.area_id,
                                old.causes if old else (), c.provisioned,
                                tuple((s.index, s.state.value) for s in birth.speakers),
                                old.telemetry if old else c.telemetry, birth.firmware)
        self._dirty.discard(c.id)
        if c.provisioned:
            self._up_state(db, c, now, "birth")
        if c.provisioned and was_up:
            self.counters["births_while_up"] += 1
        return c.provisioned

    def on_death(self, db: Session, death: Death, now: datetime) -> None:
        c = db.get(Cluster, death.cluster_id)
        if c is None:
            self.counters["death_unknown"] += 1
            return
        if c.bd_seq is not None and death.bd_seq != c.bd_seq:
            self.counters["death_stale"] += 1
            log.info("ignoring late Will of %s (bd_seq %s, current %s)", c.id, death.bd_seq,
                     c.bd_seq)
            return
        if c.provisioned:
            self._set_state(db, c, "offline", now, "last_will")

    def note_seq(self, cluster_id: str, seq: int) -> bool:
        """Track a message's sequence number; True when messages were missed (a gap)."""
        v = self.views.get(cluster_id)
        if v is None:
            return False
        last = v.last_seq
        if last is None or seq <= last:  # first seen, or reordered/duplicate: no gap
            v.last_seq = max(seq, last or 0)
            return False
        v.last_seq = seq
        if seq > last + 1:
            self.counters["seq_gaps"] += 1
            return True
        return False

    def on_telemetry(self, db: Session, t: Telemetry, now: datetime) -> tuple[bool, bool]:
        """Returns (came_online, needs_rebirth).

        Fast path: a heartbeat that changes no state, cause or speaker only updates the
        in-memory view; :meth:`flush` writes it behind in bulk."""
        v = self.views.get(t.cluster_id)
        if v is not None and v.provisioned and v.bd_seq == t.bd_seq and v.state in UP_STATES:
            # (index, SpeakerState): a StrEnum compares equal to the stored string
            speakers = tuple((s.index, s.state) for s in t.speakers)
            causes = tuple(causes_of(t, self.thresholds(db, v.area_id)))
            if speakers == v.speakers and causes == v.causes:
                v.last_seen, v.telemetry, v.firmware = now, t, t.firmware
                self._dirty.add(t.cluster_id)
                return False, False
        return self._on_telemetry_slow(db, t, now)

    def _on_telemetry_slow(self, db: Session, t: Telemetry,
                           now: datetime) -> tuple[bool, bool]:
        c = self._cluster(db, t.cluster_id, now)
        if c is None:
            return False, False
        needs_rebirth = c.bd_seq is None or t.bd_seq != c.bd_seq
        was_up = c.state in UP_STATES
        c.last_seen = now
        c.last_seq = t.seq
        c.firmware = t.firmware
        c.telemetry = stored_telemetry(t)
        self._update_speakers(c, [(s.index, s.state.value) for s in t.speakers])
        v = self.views.setdefault(c.id, View(c.state, c.bd_seq, now,
                                             c.heartbeat_s or self.default_heartbeat_s, t.seq,
                                             c.area_id, provisioned=c.provisioned))
        v.last_seen, v.telemetry, v.firmware = now, c.telemetry, t.firmware
        v.speakers = tuple((s.index, s.state.value) for s in t.speakers)
        self._dirty.discard(c.id)  # written with this transaction
        if not c.provisioned:
            return False, needs_rebirth
        th = self.thresholds(db, c.area_id)
        causes = tuple(causes_of(t, th))
        if causes != v.causes:
            v.causes = causes
            c.causes = [x.as_dict() for x in causes] or None
            self.alerts.sync(db, cluster_id=c.id, area_id=c.area_id, now=now,
                             hold_s=th.resolve_hold_s, codes=CAUSE_CODES,
                             conditions={(x.code, x.subject): x.message for x in causes})
        came_online = False
        if not needs_rebirth and (c.state in UP_STATES or c.state == "offline"):
            self._up_state(db, c, now, "heartbeat")
            came_online = not was_up
        return came_online, needs_rebirth

    def _update_speakers(self, c: Cluster, states: list[tuple[int, str]]) -> None:
        by_index = {s.index: s for s in c.speakers}
        for index, state in states:
            spk = by_index.get(index)
            if spk is None:
                c.speakers.append(Speaker(index=index, name=f"Loa {index}", state=state))
            elif spk.state != state:
                spk.state = state

    def sweep(self, db: Session, now: datetime, heard: datetime | None = None) -> list[str]:
        """Mark clusters whose heartbeats stopped offline; returns their ids.

        ``heard``: the moment up to which what the clusters said has been applied (the
        arrival of the oldest message still waiting in the controller's own inbox, or
        ``now`` when none waits: :meth:`Ingest.heard`). Silence is measured up to then, not
        up to ``now``: a heartbeat that waits behind a backlog is not a silent cluster.
        (With 10,000 clusters connecting at once the backlog reached a minute; measured
        against ``now``, thousands were declared offline with their heartbeats in the
        queue, and bringing them back online deepened the backlog further.)"""
        as_of = heard or now
        stale = [cid for cid, v in self.views.items()
                 if v.state in UP_STATES and v.last_seen is not None
                 and as_of - v.last_seen > timedelta(seconds=v.heartbeat_s * self.timeout_factor)]
        for c in self.preload(db, stale):
            if c.state in UP_STATES:
                self._set_state(db, c, "offline", now, "heartbeat_timeout")
        self.alerts.sweep(db, now)
        return stale
