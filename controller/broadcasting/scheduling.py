"""APScheduler 3 with a persistent SQLAlchemy job store: one job per upcoming slot.

Jobs reference the importable function :func:`run_slot` and carry only ids (the store
pickles them). ``misfire_grace_time=None``: a job due while the controller was down still
runs when it comes back, and the dispatcher decides whether the slot can still air (within
``late_grace_s``) or is recorded as missed. On start, :meth:`Scheduler.reconcile` re-plans
every active broadcast from the database, so a job lost in a crash is re-created; the
occurrence's unique constraint makes a duplicate harmless.

Only one scheduler may use a job store: run one controller process per database.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.broadcasting.dispatcher import Dispatcher
from controller.broadcasting.states import BROADCAST_LIVE
from controller.db.models import Broadcast, Occurrence, utcnow
from controller.db.session import make_engine

log = logging.getLogger(__name__)

__all__ = ["Scheduler", "run_slot"]

_dispatcher: Dispatcher | None = None


def run_slot(broadcast_id: str, slot_iso: str) -> None:
    """Job entry point (persisted by reference)."""
    if _dispatcher is None:
        raise RuntimeError("scheduler job ran without a dispatcher")
    _dispatcher.dispatch(broadcast_id, datetime.fromisoformat(slot_iso))


class Scheduler:
    def __init__(self, db_url: str, dispatcher: Dispatcher, lead_s: float):
        self.dispatcher = dispatcher
        self.lead = timedelta(seconds=lead_s)
        # its own engine: the job store disposes it on shutdown, which must not pull
        # connections from under the rest of the controller
        self.engine = make_engine(db_url)
        self._sched = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine)},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        dispatcher.plan_next = self._plan_after

    def start(self) -> None:
        global _dispatcher
        _dispatcher = self.dispatcher
        self._sched.start()

    def shutdown(self) -> None:
        global _dispatcher
        if self._sched.running:
            self._sched.shutdown(wait=True)  # let a running dispatch finish with its connection
        self.engine.dispose()
        _dispatcher = None

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
