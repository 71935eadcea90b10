"""The cluster's playback engine: scheduled occurrences, one audio output, priorities.

A higher priority takes the output from a lower one; at the top level the newest emergency
wins, so nothing stuck can block the system. The interrupted item is reported
``preempted`` and resumes from where it stopped (or restarts, when its play says
``after_preempt: restart`` or the player has ``resume=False``) once the
output is free, unless it expired meanwhile. Waiting items get the output highest priority
first, then in arrival order. Times are on the cluster's own clock (``clock()``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from devices.messages import DeliveryState, PlayBody, Priority

log = logging.getLogger(__name__)

__all__ = ["Occurrence", "Player"]

Report = Callable[["Occurrence", DeliveryState, datetime, str | None], Awaitable[None]]
_arrival = itertools.count()


@dataclass(slots=True, eq=False)
class Occurrence:
    body: PlayBody
    command_id: str
    expires_at: datetime
    state: DeliveryState = DeliveryState.RECEIVED
    content_ready: asyncio.Event = field(default_factory=asyncio.Event)
    content: bytes | None = None
    task: asyncio.Task[None] | None = None
    failure: str | None = None
    position_ms: int = 0
    preempt: asyncio.Event = field(default_factory=asyncio.Event)
    preempted_by: str | None = None
    arrival: int = field(default_factory=lambda: next(_arrival))
    #: when the command arrived, on the cluster's clock (set by the firmware)
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: when its first sound was heard, in true time (what a microphone beside the horn
    #: would stamp; the simulator's record, not the board's clock)
    heard_at: datetime | None = None
    #: a stream that ended before its slot did (its last batch came): played to its end
    finished_early: bool = False

    @property
    def id(self) -> str:
        return self.body.occurrence_id

    @property
    def rank(self) -> int:
        return self.body.priority.rank


def outranks(new: Occurrence, cur: Occurrence) -> bool:
    if new.rank != cur.rank:
        return new.rank > cur.rank
    # at the top level the newest emergency wins
    return new.body.priority is Priority.EMERGENCY and new.arrival > cur.arrival


class Player:
    def __init__(self, clock: Callable[[], datetime], report: Report,
                 on_played: Callable[[Occurrence, datetime, datetime], None] | None = None,
                 resume: bool = True):
        self._clock = clock
        self._report = report
        self._on_played = on_played
        self.resume = resume
        self.occurrences: dict[str, Occurrence] = {}
        self.current: Occurrence | None = None
        self._waiting: set[Occurrence] = set()
        self._changed = asyncio.Condition()

    def schedule(self, occ: Occurrence) -> None:
        self.occurrences[occ.id] = occ
        occ.task = asyncio.create_task(self._run(occ), name=f"occ-{occ.id}")

    def cancel(self, occurrence_id: str) -> Occurrence | None:
        occ = self.occurrences.get(occurrence_id)
        if occ is None or occ.state in (DeliveryState.PLAYED, DeliveryState.FAILED,
                                        DeliveryState.CANCELLED):
            return occ
        occ.failure = "cancelled"
        if occ.task is not None:
            occ.task.cancel()
        return occ

    def replace(self, occurrence_id: str) -> None:
        """Drop an item that has not started, without reporting it: a newer revision of
        the same occurrence takes its place."""
        occ = self.occurrences.pop(occurrence_id, None)
        if occ is not None and occ.task is not None:
            occ.failure = "replaced"
            occ.task.cancel()

    async def _sleep_until(self, when: datetime) -> None:
        while True:
            delay = (when - self._clock()).total_seconds()
            if delay <= 0:
                return
            await asyncio.sleep(min(delay, 1.0))  # notice clock changes (drift, correction)

    async def _run(self, occ: Occurrence) -> None:
        try:
            await self._prepare_and_play(occ)
        except asyncio.CancelledError:
            reason = occ.failure or "cancelled"
            if reason == "replaced":
                return
            if reason == "cancelled":
                await self._set(occ, DeliveryState.CANCELLED, None)
            else:
                await self._set(occ, DeliveryState.FAILED, reason)
        except Exception as exc:  # a bug must show as a failed delivery, not a dead task
            log.exception("occurrence %s crashed", occ.id)
            await self._set(occ, DeliveryState.FAILED, f"firmware error: {exc}"[:200])
        finally:
            self._waiting.discard(occ)
            if self.current is occ:
                self.current = None
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _acquire(self, occ: Occurrence) -> None:
        """Wait until ``occ`` may use the output; take it from a lower priority at once."""
        self._waiting.add(occ)
        try:
            while True:
                cur = self.current
                if cur is None:
                    best = max(self._waiting, key=lambda o: (o.rank, -o.arrival))
                    if best is occ:
                        self.current = occ
                        return
                elif cur is occ:
                    return
                elif outranks(occ, cur):
                    cur.preempted_by = f"{occ.body.priority.value} {occ.id}"
                    cur.preempt.set()
                    self.current = occ
                    return
                async with self._changed:
                    await self._changed.wait()
        finally:
            self._waiting.discard(occ)

    async def _prepare_and_play(self, occ: Occurrence) -> None:
        body = occ.body
        try:
            timeout = (occ.expires_at - self._clock()).total_seconds()
            async with asyncio.timeout(max(timeout, 0)):  # (no task per wait, as wait_for)
                await occ.content_ready.wait()
        except TimeoutError:
            await self._set(occ, DeliveryState.FAILED, occ.failure or "content not received")
            return
        if occ.content is None and body.content is not None:
            await self._set(occ, DeliveryState.FAILED, occ.failure or "content invalid")
            return
        await self._set(occ, DeliveryState.READY, None)
        await self._sleep_until(body.start_at)
        first_start: datetime | None = None
        duration = body.duration_ms
        while True:
            await self._acquire(occ)
            if self._clock() >= occ.expires_at:
                what = "preempted; expired before it could resume" if first_start else \
                    "expired before it could play"
                await self._set(occ, DeliveryState.FAILED, what)
                return
            occ.preempt.clear()
            started = self._clock()
            if first_start is None:
                first_start = started
                occ.heard_at = datetime.now(UTC)
                late_ms = int((started - body.start_at).total_seconds() * 1000)
                note = f"late by {late_ms} ms" if late_ms > 1000 else None
            else:
                note = (f"resumed at {occ.position_ms / 1000:.1f} s" if occ.position_ms
                        else "restarted from the beginning")
            await self._set(occ, DeliveryState.PLAYING, note, at=started)
            if body.stream is not None or body.line is not None:  # live: back where it is now
                end = body.start_at + timedelta(milliseconds=duration)
                remaining = (end - self._clock()).total_seconds()
            else:
                remaining = (duration - occ.position_ms) / 1000
            try:
                async with asyncio.timeout(max(remaining, 0)):
                    await occ.preempt.wait()
            except TimeoutError:
                break  # played to the end
            if occ.finished_early:
                break
            played = int((self._clock() - started).total_seconds() * 1000)
            resume = self.resume and body.after_preempt != "restart"
            occ.position_ms = min(duration, occ.position_ms + played) if resume else 0
            if self.current is occ:
                self.current = None
            await self._set(occ, DeliveryState.PREEMPTED,
                            f"by {occ.preempted_by} at {occ.position_ms / 1000:.1f} s")
            await self._notify()
        finished = self._clock()
        if self._on_played is not None:
            self._on_played(occ, first_start, finished)
        await self._set(occ, DeliveryState.PLAYED, None, at=finished)

    async def _set(self, occ: Occurrence, state: DeliveryState, reason: str | None,
                   at: datetime | None = None) -> None:
        occ.state = state
        await self._report(occ, state, at or self._clock(), reason)

    async def close(self) -> None:
        tasks = [o.task for o in self.occurrences.values() if o.task and not o.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
