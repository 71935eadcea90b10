"""The cluster's playback engine: scheduled occurrences, one audio output, priorities.

Times are on the cluster's own clock (``clock()``), converted to the event loop's monotonic
time only to sleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from devices.messages import DeliveryState, PlayBody

log = logging.getLogger(__name__)

__all__ = ["Occurrence", "Player"]

Report = Callable[["Occurrence", DeliveryState, datetime, str | None], Awaitable[None]]


@dataclass(slots=True)
class Occurrence:
    body: PlayBody
    command_id: str
    expires_at: datetime
    state: DeliveryState = DeliveryState.RECEIVED
    content_ready: asyncio.Event = field(default_factory=asyncio.Event)
    content: bytes | None = None
    task: asyncio.Task[None] | None = None
    failure: str | None = None

    @property
    def id(self) -> str:
        return self.body.occurrence_id


class Player:
    """Schedules and 'plays' occurrences. One thing plays at a time; a higher priority takes
    the output from a lower one (the lower one is reported failed with reason ``preempted``)."""

    def __init__(self, clock: Callable[[], datetime], report: Report,
                 on_played: Callable[[Occurrence, datetime, datetime], None] | None = None):
        self._clock = clock
        self._report = report
        self._on_played = on_played
        self.occurrences: dict[str, Occurrence] = {}
        self.current: Occurrence | None = None
        self._output_free = asyncio.Condition()

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

    async def _sleep_until(self, when: datetime) -> None:
        while True:
            delay = (when - self._clock()).total_seconds()
            if delay <= 0:
                return
            # sleep in steps so a clock change (drift, correction) is noticed
            await asyncio.sleep(min(delay, 1.0))

    async def _run(self, occ: Occurrence) -> None:
        try:
            await self._prepare_and_play(occ)
        except asyncio.CancelledError:
            reason = occ.failure or "cancelled"
            if reason == "cancelled":
                await self._set(occ, DeliveryState.CANCELLED, None)
            else:
                await self._set(occ, DeliveryState.FAILED, reason)
        except Exception as exc:  # a bug must show as a failed delivery, not a dead task
            log.exception("occurrence %s crashed", occ.id)
            await self._set(occ, DeliveryState.FAILED, f"firmware error: {exc}"[:200])
        finally:
            if self.current is occ:
                self.current = None
                async with self._output_free:
                    self._output_free.notify_all()

    async def _prepare_and_play(self, occ: Occurrence) -> None:
        body = occ.body
        try:
            timeout = (occ.expires_at - self._clock()).total_seconds()
            await asyncio.wait_for(occ.content_ready.wait(), timeout=max(timeout, 0))
        except TimeoutError:
            await self._set(occ, DeliveryState.FAILED, occ.failure or "content not received")
            return
        if occ.content is None:
            await self._set(occ, DeliveryState.FAILED, occ.failure or "content invalid")
            return
        await self._set(occ, DeliveryState.READY, None)
        await self._sleep_until(body.start_at)
        # take the output: preempt a lower priority, wait for an equal or higher one
        while self.current is not None and self.current is not occ:
            if body.priority.rank > self.current.body.priority.rank:
                victim = self.current
                victim.failure = f"preempted by {body.priority.value} {occ.id}"
                if victim.task is not None:
                    victim.task.cancel()
                self.current = None
                break
            async with self._output_free:
                await self._output_free.wait()
        if self._clock() >= occ.expires_at:
            await self._set(occ, DeliveryState.FAILED, "expired before it could play")
            return
        self.current = occ
        started = self._clock()
        late_ms = int((started - body.start_at).total_seconds() * 1000)
        await self._set(occ, DeliveryState.PLAYING, f"late by {late_ms} ms" if late_ms > 1000
                        else None, at=started)
        await asyncio.sleep(body.content.duration_ms / 1000)
        finished = self._clock()
        if self._on_played is not None:
            self._on_played(occ, started, finished)
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
