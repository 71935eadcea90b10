"""Cluster health: online/offline from births, Last Wills (bd_seq-checked) and heartbeats.

Connection state and liveness are kept apart: a cluster is online only while its heartbeats
arrive; the broker's keep-alive is not counted. A Will whose bd_seq is not the current
birth's is late and ignored (Sparkplug B rule), so it cannot mark a live cluster offline.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import Cluster, Speaker
from devices.messages import Birth, Death, Telemetry

log = logging.getLogger(__name__)

__all__ = ["HealthTracker", "View"]


@dataclass(slots=True)
class View:
    state: str
    bd_seq: int | None
    last_seen: datetime | None
    heartbeat_s: int
    last_seq: int | None


class HealthTracker:
    def __init__(self, timeout_factor: float = 1.5, default_heartbeat_s: int = 30):
        self.timeout_factor = timeout_factor
        self.default_heartbeat_s = default_heartbeat_s
        self.views: dict[str, View] = {}
        self.counters: Counter[str] = Counter()

    def load(self, db: Session) -> None:
        for c in db.scalars(select(Cluster)):
            self.views[c.id] = View(c.state, c.bd_seq, c.last_seen,
                                    c.heartbeat_s or self.default_heartbeat_s, c.last_seq)

    def _cluster(self, db: Session, cluster_id: str, now: datetime) -> Cluster:
        c = db.get(Cluster, cluster_id)
        if c is None:  # a device we do not know: keep it visible, never target it
            c = Cluster(id=cluster_id, name=cluster_id, provisioned=False,
                        state="unprovisioned", state_since=now)
            db.add(c)
            db.flush()
            log.warning("unprovisioned device %s announced itself", cluster_id)
            self.counters["unprovisioned"] += 1
        return c

    def _set_state(self, c: Cluster, state: str, now: datetime, reason: str | None) -> None:
        if c.state != state:
            log.info("cluster %s: %s -> %s (%s)", c.id, c.state, state, reason or "")
            c.state = state
            c.state_since = now
        c.state_reason = reason
        v = self.views.get(c.id)
        if v is not None:
            v.state = state

    def on_birth(self, db: Session, birth: Birth, now: datetime) -> bool:
        """Returns True when the cluster (re)appeared online."""
        c = self._cluster(db, birth.cluster_id, now)
        was_online = c.state == "online"
        c.bd_seq = birth.bd_seq
        c.last_seen = now
        c.last_seq = None  # the next message sets the baseline
        c.firmware = birth.firmware
        c.heartbeat_s = birth.heartbeat_s
        self._update_speakers(c, [(s.index, s.state.value) for s in birth.speakers])
        if c.provisioned:
            self._set_state(c, "online", now, "birth")
        self.views[c.id] = View(c.state, c.bd_seq, now, c.heartbeat_s, None)
        return c.provisioned and not was_online

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
            self._set_state(c, "offline", now, "link lost (last will)")

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
        """Returns (came_online, needs_rebirth)."""
        c = self._cluster(db, t.cluster_id, now)
        needs_rebirth = c.bd_seq is not None and t.bd_seq != c.bd_seq
        if c.bd_seq is None:
            needs_rebirth = True
        c.last_seen = now
        c.last_seq = t.seq
        c.firmware = t.firmware
        c.telemetry = t.model_dump(mode="json", exclude={"v", "cluster_id"})
        self._update_speakers(c, [(s.index, s.state.value) for s in t.speakers])
        came_online = False
        if c.provisioned and c.state != "online" and not needs_rebirth:
            self._set_state(c, "online", now, "heartbeat")
            came_online = True
        v = self.views.setdefault(c.id, View(c.state, c.bd_seq, now,
                                             c.heartbeat_s or self.default_heartbeat_s, t.seq))
        v.last_seen, v.state = now, c.state
        return came_online, needs_rebirth

    def _update_speakers(self, c: Cluster, states: list[tuple[int, str]]) -> None:
        by_index = {s.index: s for s in c.speakers}
        for index, state in states:
            spk = by_index.get(index)
            if spk is None:
                c.speakers.append(Speaker(index=index, name=f"Loa {index}", state=state))
            elif spk.state != state:
                spk.state = state

    def sweep(self, db: Session, now: datetime) -> list[str]:
        """Mark clusters whose heartbeats stopped offline; returns their ids."""
        stale = []
        for cid, v in self.views.items():
            if v.state != "online" or v.last_seen is None:
                continue
            if now - v.last_seen > timedelta(seconds=v.heartbeat_s * self.timeout_factor):
                stale.append(cid)
        for cid in stale:
            c = db.get(Cluster, cid)
            if c is not None and c.state == "online":
                self._set_state(c, "offline", now, "heartbeat timeout")
        return stale
