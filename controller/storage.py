"""What the controller knows about its own storage: whether the database takes writes, and
why not (disk full, read-only, unreachable), as a coded reason.

Every part that writes reports here (:meth:`StorageMonitor.failed` / :meth:`ok`). While
writes fail the API answers 503 ``storage_unavailable`` with the reason, ``GET
/api/v1/health`` says so, and one controller alert is open: it lives in memory (the
database is what is failing), is sent to the alert webhooks at once, and is written to the
alert history once writes succeed again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.db.models import Alert, utcnow
from controller.fleet.alerts import WebhookSender

log = logging.getLogger(__name__)

__all__ = ["STORAGE_REASONS", "StorageMonitor", "StorageProblem", "classify", "is_storage_error"]

#: reason code -> what it means (the alert's and the 503's ``params.reason``)
STORAGE_REASONS = {
    "disk_full": "the disk holding the database is full",
    "read_only": "the database (or its folder) cannot be written",
    "unreachable": "the database server cannot be reached",
    "busy": "the database stayed locked by another writer",
    "error": "the database refused the write",
}


def is_storage_error(exc: BaseException) -> bool:
    """An error of the database or its disk (retry later), not of the data being written."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def classify(exc: BaseException) -> str:
    text = str(exc).lower()
    if "disk is full" in text or "no space left" in text or "disk full" in text:
        return "disk_full"
    if "readonly" in text or "read-only" in text or "unable to open database" in text:
        return "read_only"
    if "locked" in text:
        return "busy"
    if any(w in text for w in ("connection", "connect", "server closed", "terminating",
                               "could not receive", "shutting down", "no route")):
        return "unreachable"
    return "error"


@dataclass
class StorageProblem:
    reason: str
    since: datetime
    detail: str

    def body(self) -> dict[str, object]:
        return {"code": "storage_unavailable",
                "params": {"reason": self.reason, "since": self.since.isoformat()},
                "message": f"storage unavailable: {STORAGE_REASONS[self.reason]}"}


class StorageMonitor:
    def __init__(self, webhooks: WebhookSender | None = None):
        self.webhooks = webhooks
        self.problem: StorageProblem | None = None
        self._lock = threading.Lock()
        #: problems that cleared, their alert not yet written to the history
        self._to_record: list[tuple[StorageProblem, datetime]] = []
        self.failures = 0

    def failed(self, exc: BaseException) -> StorageProblem:
        reason = classify(exc)
        detail = str(exc).splitlines()[0][:300]
        with self._lock:
            self.failures += 1
            if self.problem is None or self.problem.reason != reason:
                first = self.problem is None
                self.problem = StorageProblem(reason, utcnow(), detail)
                log.error("storage unavailable (%s): %s", reason, detail)
                if first and self.webhooks is not None:
                    self.webhooks.emit("opened", self.alert())  # type: ignore[arg-type]
            return self.problem

    def ok(self) -> None:
        if self.problem is None:
            return
        with self._lock:
            if self.problem is None:
                return
            problem, self.problem = self.problem, None
            self._to_record.append((problem, utcnow()))
        log.warning("storage available again (was %s since %s)", problem.reason,
                    problem.since.isoformat())

    def alert(self) -> Alert | None:
        """The open storage alert (not a database row: the database is what fails)."""
        p = self.problem
        if p is None:
            return None
        return Alert(id=0, cluster_id=None, area_id=None, code=f"storage_{p.reason}",
                     subject="controller", severity="critical",
                     message=f"{STORAGE_REASONS[p.reason]}: {p.detail}"[:500],
                     opened_at=p.since, last_seen_at=utcnow(), cleared_at=None,
                     resolved_at=None, acknowledged_at=None, acknowledged_by=None, hold_s=0,
                     flaps=0)

    def record(self, sessions: sessionmaker[Session]) -> int:
        """Write the storage alerts that have cleared to the alert history (resolved)."""
        if not self._to_record:
            return 0
        with self._lock:
            done, self._to_record = self._to_record, []
        try:
            with sessions() as db:
                for p, cleared in done:
                    a = Alert(cluster_id=None, area_id=None, code=f"storage_{p.reason}",
                              subject="controller", severity="critical",
                              message=f"{STORAGE_REASONS[p.reason]}: {p.detail}"[:500],
                              opened_at=p.since, last_seen_at=cleared, cleared_at=cleared,
                              resolved_at=cleared, hold_s=0, flaps=0)
                    db.add(a)
                    if self.webhooks is not None:
                        self.webhooks.emit("resolved", a)
                db.commit()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            with self._lock:
                self._to_record = done + self._to_record
            return 0
        return len(done)
