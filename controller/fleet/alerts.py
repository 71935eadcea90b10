"""Alerts with a lifecycle: opened with a cause → acknowledged by a technician → resolved
automatically once the condition has stayed clear for the area's ``resolve_hold_s``.

One open alert per (cluster or area, code, subject): repeats update it. A condition that
clears and comes back within the hold (a flapping link) re-arms the same alert and counts a
flap instead of opening a new one, so 50 drops in 10 minutes are one alert, not 50.
The open alerts are indexed in memory so a heartbeat costs no database query.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db.models import Alert
from controller.fleet.causes import SEVERITY

log = logging.getLogger(__name__)

__all__ = ["AlertManager", "WebhookSender", "alert_dict"]

Key = tuple[str, str, str]  # (owner: cluster id or "area:<id>", code, subject)


def alert_dict(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id, "cluster_id": a.cluster_id, "area_id": a.area_id, "code": a.code,
        "subject": a.subject, "severity": a.severity, "message": a.message,
        "status": "resolved" if a.resolved_at else ("acknowledged" if a.acknowledged_at else "open"),
        "opened_at": a.opened_at.isoformat(), "last_seen_at": a.last_seen_at.isoformat(),
        "cleared_at": a.cleared_at.isoformat() if a.cleared_at else None,
        "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
        "acknowledged_at": a.acknowledged_at.isoformat() if a.acknowledged_at else None,
        "acknowledged_by": a.acknowledged_by, "flaps": a.flaps,
    }


class WebhookSender:
    """POSTs alert events as JSON to the configured URLs, off the ingest thread, with retries."""

    def __init__(self, urls: Iterable[str], retries: int = 3, timeout_s: float = 5.0):
        self.urls = [u for u in urls if u]
        self.retries, self.timeout_s = retries, timeout_s
        self.sent = 0
        self.failed = 0
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self._thread = threading.Thread(target=self._loop, name="loa-webhooks", daemon=True)
        if self.urls:
            self._thread.start()

    def emit(self, event: str, alert: Alert) -> None:
        if not self.urls:
            return
        try:
            self._q.put_nowait({"event": event, "alert": alert_dict(alert)})
        except queue.Full:
            self.failed += 1

    def stop(self) -> None:
        if self.urls:
            self._q.put(None)
            self._thread.join(5)

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            body = json.dumps(item, ensure_ascii=False).encode()
            for url in self.urls:
                for attempt in range(self.retries):
                    try:
                        req = urllib.request.Request(
                            url, data=body, headers={"Content-Type": "application/json"})
                        with urllib.request.urlopen(req, timeout=self.timeout_s):
                            self.sent += 1
                        break
                    except OSError as exc:
                        if attempt == self.retries - 1:
                            self.failed += 1
                            log.warning("alert webhook %s failed: %s", url, exc)
                        else:
                            time.sleep(0.5 * 2**attempt)


class AlertManager:
    def __init__(self, webhooks: WebhookSender):
        self.webhooks = webhooks
        self._open: dict[Key, int] = {}  # key -> alert id
        self._cleared: dict[Key, datetime | None] = {}
        #: owner -> its open keys: a sync looks at one owner's alerts, not at every open
        #: alert (10,000 clusters offline at once made each sync scan 10,000 keys)
        self._owned: dict[str, set[Key]] = {}
        #: the hold of each cleared alert, so a sweep reads only the alerts due
        self._hold: dict[Key, int] = {}
        self.opened = 0

    def load(self, db: Session) -> None:
        self._open.clear()
        self._cleared.clear()
        self._owned.clear()
        self._hold.clear()
        for a in db.scalars(select(Alert).where(Alert.resolved_at.is_(None))):
            key = self._key(a.cluster_id, a.area_id, a.code, a.subject)
            self._open[key] = a.id
            self._cleared[key] = a.cleared_at
            self._hold[key] = a.hold_s
            self._owned.setdefault(key[0], set()).add(key)

    @staticmethod
    def _key(cluster_id: str | None, area_id: str | None, code: str, subject: str) -> Key:
        return (cluster_id or f"area:{area_id}", code, subject)

    def sync(self, db: Session, *, cluster_id: str | None, area_id: str | None,
             conditions: dict[tuple[str, str], str], now: datetime, hold_s: int,
             codes: Iterable[str] | None = None) -> None:
        """Make the open alerts of one owner match its current conditions.

        ``conditions`` maps (code, subject) to a message. ``codes`` limits which codes this
        call is about (others of the owner are left alone); None means all.
        """
        owner = cluster_id or f"area:{area_id}"
        scope = set(codes) if codes is not None else None
        for (code, subject), message in conditions.items():
            key = (owner, code, subject)
            alert_id = self._open.get(key)
            if alert_id is None:
                a = Alert(cluster_id=cluster_id, area_id=area_id, code=code, subject=subject,
                          severity=SEVERITY.get(code, "warning"), message=message[:500],
                          opened_at=now, last_seen_at=now, hold_s=hold_s)
                db.add(a)
                db.flush()
                self._open[key] = a.id
                self._cleared[key] = None
                self._owned.setdefault(owner, set()).add(key)
                self.opened += 1
                log.warning("alert opened: %s %s %s: %s", owner, code, subject, message)
                self.webhooks.emit("opened", a)
                continue
            if self._cleared.get(key) is not None:  # back within the hold: a flap
                held = db.get(Alert, alert_id)
                if held is not None:
                    held.cleared_at = None
                    held.flaps += 1
                    held.last_seen_at = now
                    held.message = f"{message} (flapping: came back {held.flaps} times)"[:500]
                self._cleared[key] = None
        for key in list(self._owned.get(owner, ())):
            alert_id = self._open[key]
            if (key[1], key[2]) in conditions:
                continue
            if scope is not None and key[1] not in scope:
                continue
            if self._cleared.get(key) is None:
                clearing = db.get(Alert, alert_id)
                if clearing is not None:
                    clearing.cleared_at = now
                    clearing.hold_s = hold_s
                self._cleared[key] = now
                self._hold[key] = hold_s

    def sweep(self, db: Session, now: datetime) -> int:
        """Resolve alerts whose condition stayed clear for their hold; returns how many."""
        resolved = 0
        for key, cleared in list(self._cleared.items()):
            if cleared is None:
                continue
            hold = self._hold.get(key)
            if hold is not None and now - cleared < timedelta(seconds=hold):
                continue  # (no read while the hold runs: 10,000 held alerts, every second)
            a = db.get(Alert, self._open[key])
            if a is None or now - cleared < timedelta(seconds=a.hold_s):
                continue
            a.resolved_at = now
            del self._open[key]
            del self._cleared[key]
            self._hold.pop(key, None)
            owned = self._owned.get(key[0])
            if owned is not None:
                owned.discard(key)
                if not owned:
                    del self._owned[key[0]]
            resolved += 1
            log.info("alert resolved: %s %s %s", *key)
            self.webhooks.emit("resolved", a)
        return resolved

    def open_keys(self) -> list[Key]:
        return list(self._open)

    def open_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _owner, code, _subject in self._open:
            counts[code] = counts.get(code, 0) + 1
        return counts
