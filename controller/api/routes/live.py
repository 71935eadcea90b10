"""Live sound: ``POST /api/v1/live`` opens a live broadcast and answers where to send the
audio; the sender streams it over a WebSocket (``ingest_url``); ``POST /live/{id}/stop``
ends it. The broadcast is an item of the programme like any other (targets, priority,
preemption, proof per village), its content a stream (:mod:`controller.live.streams`).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from controller.access.jurisdiction import require_role
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.schemas import BroadcastCreate, LiveCreate
from controller.broadcasting import service
from controller.broadcasting.referral import from_above
from controller.db.models import Broadcast, Content, utcnow
from controller.errors import Forbidden, Invalid, NotFound
from controller.live.streams import INGEST_FORMATS, descriptor_content

router = APIRouter(tags=["live"])

#: who may go live: a leader or an admin; an officer where no leader's approval is required
LIVE_ROLES = ("admin", "leader", "officer")
#: ingest keys, by live id (a browser's WebSocket cannot send an Authorization header)
_KEYS: dict[str, str] = {}


@router.post("/live", status_code=201)
def start_live(req: LiveCreate, request: Request, db: SessionDep, rt: RuntimeDep,
               user: CurrentUser) -> dict[str, Any]:
    """Go live to ``targets``: ``{"id", "broadcast_id", "ingest_url"}``. Send the audio to
    ``ingest_url`` (a WebSocket: binary messages of WebM/Opus as a browser's MediaRecorder
    makes them, ``?format=ogg`` for Ogg/Opus, ``?format=pcm`` for 16-bit 48 kHz mono PCM).
    Boards hear it ``LOA_STREAM_LATENCY_MS`` after it arrives."""
    require_role(user, LIVE_ROLES, "go live")
    if req.priority != "emergency" and from_above(db, user):
        raise Invalid("live_from_above", "a province or district goes live to communes as an "
                      "emergency; a normal live broadcast belongs to a commune")
    assert rt.streams is not None
    max_s = req.max_duration_s or rt.settings.live_max_s
    content = descriptor_content(db, {"kind": "live", "nonce": uuid.uuid4().hex}, max_s,
                                 user.username, f"live by {user.username}")
    start = None if req.priority == "emergency" else \
        utcnow() + timedelta(seconds=rt.settings.min_start_lead_s)
    breq = BroadcastCreate(content_id=content.id, targets=req.targets, priority=req.priority,
                           title=req.title or "Phát trực tiếp", start_at=start)
    plan = service.validate(breq, db, rt, user)
    if service.needs_approval(db, user, plan):
        raise Forbidden("live_needs_leader", "this area's policy has a leader approve an "
                        "officer's bulletins; a live broadcast cannot wait: ask a leader",
                        user=user.username)
    bc = service.schedule(breq, db, rt, user)
    key = _KEYS[content.id] = secrets.token_urlsafe(24)
    rt.streams.pipe(content.id)
    base = str(request.base_url).replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return {"id": content.id, "broadcast_id": bc.id, "start_at": bc.start_at,
            "latency_ms": rt.settings.stream_latency_ms, "formats": sorted(INGEST_FORMATS),
            "ingest_url": f"{base}api/v1/live/{content.id}/ingest?key={key}"}


@router.post("/live/{live_id}/stop", status_code=202)
def stop_live(live_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> dict[str, Any]:
    """End a live broadcast: the audio sent so far plays out, then the boards stop."""
    content = db.get(Content, live_id)
    bc = db.query(Broadcast).filter(Broadcast.content_id == live_id).one_or_none() \
        if content is not None and content.kind == "live" else None
    if bc is None:
        raise NotFound("live_not_found", f"no live broadcast {live_id!r}", live=live_id)
    service.find_visible(db, user, bc.id)
    if bc.created_by != user.username and user.role not in ("admin", "leader"):
        raise Forbidden("live_not_yours", "only who started it, a leader or an admin ends a "
                        "live broadcast", user=user.username)
    assert rt.streams is not None
    rt.streams.stop_live(live_id)
    _KEYS.pop(live_id, None)
    return {"id": live_id, "broadcast_id": bc.id, "stopping": True}


@router.websocket("/live/{live_id}/ingest")
async def ingest(ws: WebSocket, live_id: str, key: str = "", format: str = "webm") -> None:
    """The sender's audio, binary messages in order; a text message ``stop`` ends it."""
    rt = ws.app.state.runtime
    expected = _KEYS.get(live_id)
    if expected is None or not hmac.compare_digest(expected, key) or format not in INGEST_FORMATS:
        await ws.close(code=4403)
        return
    await ws.accept()
    pipe = rt.streams.pipe(live_id)
    pipe.fmt = format
    pipe.connected.set()
    try:
        while True:
            msg = await ws.receive()
            if msg.get("type") == "websocket.disconnect":
                break
            if msg.get("bytes"):
                pipe.feed(msg["bytes"])
            elif msg.get("text") == "stop":
                pipe.end()
                break
    except WebSocketDisconnect:
        pass
    finally:
        # the sender gone without "stop": the source ends after LOA_STREAM_SOURCE_TIMEOUT_S
        # of silence (a 4G blip with raw PCM may reconnect and go on meanwhile)
        pass
