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
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from controller.access.security import user_for_token
from controller.api.deps import RuntimeDep, oauth2
from controller.db.models import (
    ActionResult,
    Alert,
    Broadcast,
    Cluster,
    Delivery,
    Occurrence,
    Speaker,
)
from controller.errors import Unauthorized
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


def _holder(rt: Runtime, token: str | None) -> str:
    """Whose stream this is, checked in a session of its own that is closed at once: a stream
    stays open for hours and must not hold a database connection (thirty consoles would
    take every connection of the pool)."""
    if not token:
        raise Unauthorized("not_authenticated", "Not authenticated: send a bearer "
                           "token from POST /api/v1/auth/token")
    with rt.sessions() as db:
        user = user_for_token(db, token)
        if user is None:
            raise Unauthorized("token_invalid", "Invalid or expired token")
        return user.username


@router.get("/events", response_class=StreamingResponse, responses={200: {
    "content": {"text/event-stream": {}},
    "description": 'Server-Sent Events: `data: {"topics": ["clusters", …]}` when those change'}})
async def events(request: Request, rt: RuntimeDep,
                 token: Annotated[str | None, Depends(oauth2)]) -> StreamingResponse:
    """What changed, pushed: the console reloads only what a topic names. A comment line
    every 30 s keeps proxies from closing the stream. The stream ends when its token no
    longer holds (logout, expiry, a disabled account), checked every 30 s."""
    await asyncio.to_thread(_holder, rt, token)
    feed = feed_of(request, rt)
    q = feed.subscribe()

    async def still_valid() -> bool:
        try:
            await asyncio.to_thread(_holder, rt, token)
        except Unauthorized:
            return False
        except SQLAlchemyError:  # storage down: the stream is not the one to judge
            return True
        return True

    async def stream() -> AsyncIterator[str]:
        checked = time.monotonic()
        try:
            yield ": loa events\nretry: 5000\n\n"
            while not await request.is_disconnected():
                try:
                    topics = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                    out = f"data: {json.dumps({'topics': topics})}\n\n"
                except TimeoutError:
                    out = ": keepalive\n\n"
                if time.monotonic() - checked >= KEEPALIVE_S:
                    checked = time.monotonic()
                    if not await still_valid():
                        yield "event: session_ended\ndata: {}\n\n"
                        return
                yield out
        finally:
            feed.unsubscribe(q)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
