"""Pushed changes for the console: ``GET /api/v1/events``, Server-Sent Events.

One feed per process looks at a few aggregates of the database every ``POLL_S`` (one query
per topic, whatever the number of consoles, and only while at least one listens) and
tells every listener which topics changed: ``clusters``, ``alerts``, ``broadcasts``,
``actions``. The console then fetches what it shows again; nothing is polled by the
browser, and an idle console receives a comment line every ``KEEPALIVE_S`` (about 3 KB an
hour). Each event is ``data: {"topics": [...]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from controller.api.deps import CurrentUser, RuntimeDep
from controller.db.models import (
    ActionResult,
    Alert,
    Broadcast,
    Cluster,
    Delivery,
    Occurrence,
    Speaker,
)
from controller.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

POLL_S = 2.0
KEEPALIVE_S = 30.0
#: a listener further behind than this many events is sent everything
QUEUE_MAX = 16


def _fingerprints(rt: Runtime) -> dict[str, Any]:
    with rt.sessions() as db:
        alerts = tuple(db.execute(select(
            func.count(Alert.id), func.max(Alert.opened_at), func.max(Alert.resolved_at),
            func.max(Alert.acknowledged_at), func.max(Alert.cleared_at))).one())
        clusters = tuple(db.execute(select(
            func.count(Cluster.id), func.max(Cluster.state_since), func.max(Cluster.retired_at),
            func.max(Cluster.credential_issued_at))).one())
        speakers = tuple(db.execute(select(Speaker.state, func.count(Speaker.cluster_id))
                                    .group_by(Speaker.state).order_by(Speaker.state)).all())
        statuses = tuple(db.execute(select(Broadcast.status, func.count(Broadcast.id))
                                    .group_by(Broadcast.status).order_by(Broadcast.status)).all())
        deliveries = db.execute(select(func.max(Delivery.updated_at))).scalar()
        occurrences = tuple(db.execute(select(Occurrence.status, func.count(Occurrence.id))
                                       .group_by(Occurrence.status)
                                       .order_by(Occurrence.status)).all())
        actions = db.execute(select(func.max(ActionResult.updated_at))).scalar()
    return {"alerts": alerts, "clusters": (clusters, speakers, alerts),
            "broadcasts": (statuses, deliveries, occurrences), "actions": actions}


class ChangeFeed:
    """Watches the aggregates while anyone listens; each listener has a bounded queue."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.listeners: set[asyncio.Queue[list[str]]] = set()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[list[str]]:
        q: asyncio.Queue[list[str]] = asyncio.Queue(QUEUE_MAX)
        self.listeners.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return q

    def unsubscribe(self, q: asyncio.Queue[list[str]]) -> None:
        self.listeners.discard(q)

    async def _run(self) -> None:
        last: dict[str, Any] | None = None
        while self.listeners:
            now: dict[str, Any] | None
            try:
                now = await asyncio.to_thread(_fingerprints, self.rt)
            except SQLAlchemyError as exc:  # storage down: say nothing, try again
                log.debug("change feed: %s", exc)
                now = last
            if last is not None and now is not None:
                topics = [k for k in now if now[k] != last[k]]
                if topics:
                    for q in list(self.listeners):
                        try:
                            q.put_nowait(topics)
                        except asyncio.QueueFull:  # far behind: it reloads everything
                            with contextlib.suppress(asyncio.QueueEmpty):
                                while True:
                                    q.get_nowait()
                            q.put_nowait(["*"])
            last = now
            await asyncio.sleep(POLL_S)


def feed_of(request: Request, rt: Runtime) -> ChangeFeed:
    feed: ChangeFeed | None = getattr(request.app.state, "change_feed", None)
    if feed is None or feed.rt is not rt:
        feed = ChangeFeed(rt)
        request.app.state.change_feed = feed
    return feed


@router.get("/events", response_class=StreamingResponse, responses={200: {
    "content": {"text/event-stream": {}},
    "description": 'Server-Sent Events: `data: {"topics": ["clusters", …]}` when those change'}})
async def events(request: Request, rt: RuntimeDep, user: CurrentUser) -> StreamingResponse:
    """What changed, pushed: the console reloads only what a topic names. A comment line
    every 30 s keeps proxies from closing the stream."""
    feed = feed_of(request, rt)
    q = feed.subscribe()

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": loa events\nretry: 5000\n\n"
            while not await request.is_disconnected():
                try:
                    topics = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield f"data: {json.dumps({'topics': topics})}\n\n"
        finally:
            feed.unsubscribe(q)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
