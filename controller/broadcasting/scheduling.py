"""APScheduler 3, one job per upcoming slot, in memory: the database's broadcasts and
occurrences are the plan, and the jobs only its next steps.

On start, :meth:`Scheduler.reconcile` plans every live broadcast's next slot from the
database, a slot due while the controller was down included (it runs at once, and the
dispatcher decides whether it can still air, within ``late_grace_s``, or is recorded as
missed); the occurrence's unique constraint makes a duplicate harmless. Jobs are not kept
in the database: a job store there was a second copy of the plan, and a write to it (a
full disk, a database that is down) could fail where the plan itself stands.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.broadcasting.dispatcher import Dispatcher
from controller.broadcasting.states import BROADCAST_LIVE
from controller.db.models import Broadcast, Occurrence, utcnow
from controller.storage import is_storage_error

log = logging.getLogger(__name__)

__all__ = ["Scheduler", "run_slot"]

_dispatcher: Dispatcher | None = None
_scheduler: Scheduler | None = None
#: a slot whose dispatch the database refused is tried again this often
RETRY_S = 2.0


def run_slot(broadcast_id: str, slot_iso: str) -> None:
    """Job entry point."""
    if _dispatcher is None:
        raise RuntimeError("scheduler job ran without a dispatcher")
    slot = datetime.fromisoformat(slot_iso)
    try:
        _dispatcher.dispatch(broadcast_id, slot)
    except Exception as exc:
        if not is_storage_error(exc) or _scheduler is None:
            raise
        # the database cannot even be read (a server that is down): try again shortly;
        # the dispatcher records the slot missed if it comes back too late for it
        _dispatcher.storage.failed(exc)
        _scheduler.retry_slot(broadcast_id, slot)


class Scheduler:
    def __init__(self, dispatcher: Dispatcher, lead_s: float):
        self.dispatcher = dispatcher
        self.lead = timedelta(seconds=lead_s)
        self._sched = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        dispatcher.plan_next = self._plan_after

    def start(self) -> None:
        global _dispatcher, _scheduler
        _dispatcher, _scheduler = self.dispatcher, self
        self._sched.start()

    def retry_slot(self, broadcast_id: str, slot: datetime) -> None:
        self._sched.add_job(run_slot, "date", run_date=utcnow() + timedelta(seconds=RETRY_S),
                            args=[broadcast_id, slot.isoformat()],
                            id=f"{broadcast_id}@{slot.isoformat()}", replace_existing=True)

    def shutdown(self) -> None:
        global _dispatcher, _scheduler
        if self._sched.running:
            self._sched.shutdown(wait=True)  # let a running dispatch finish with its connection
        _dispatcher = _scheduler = None

    def plan_slot(self, bc: Broadcast, slot: datetime) -> None:
        run_at = max(slot - self.lead, utcnow())
        self._sched.add_job(
            run_slot, "date", run_date=run_at, args=[bc.id, slot.isoformat()],
            id=f"{bc.id}@{slot.isoformat()}", replace_existing=True,
        )
        log.info("broadcast %s: slot %s planned (dispatch at %s)", bc.id, slot.isoformat(),
                 run_at.isoformat())

    def _plan_after(self, bc: Broadcast, after: datetime) -> None:
        nxt = self.dispatcher.next_slot(bc, after)
        if nxt is not None:
            self.plan_slot(bc, nxt)

    def plan(self, bc: Broadcast) -> None:
        if bc.recurrence:
            self._plan_after(bc, utcnow() - timedelta(seconds=1))
        elif bc.start_at is not None:
            self.plan_slot(bc, bc.start_at)

    def unplan(self, broadcast_id: str) -> None:
        for job in self._sched.get_jobs():
            if job.id.startswith(f"{broadcast_id}@"):
                job.remove()

    def reconcile(self, db: Session) -> int:
        """Make sure every active broadcast has its next slot planned."""
        planned = 0
        grace = timedelta(seconds=self.dispatcher.settings.late_grace_s)
        for bc in db.scalars(select(Broadcast).where(Broadcast.status.in_(BROADCAST_LIVE))):
            last = db.scalar(select(func.max(Occurrence.scheduled_at))
                             .where(Occurrence.broadcast_id == bc.id))
            if bc.recurrence:
                after = max(last or bc.created_at, utcnow() - grace - timedelta(seconds=1))
                nxt = self.dispatcher.next_slot(bc, after)
            else:
                nxt = bc.start_at if last is None else None
            if nxt is not None:
                self.plan_slot(bc, nxt)
                planned += 1
        return planned
