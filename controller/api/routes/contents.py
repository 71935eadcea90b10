from __future__ import annotations

import hashlib
import json
import math
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Response, UploadFile
from sqlalchemy import select

from audio import AudioError, prepare_file, prepare_segment
from controller.access.jurisdiction import scope, visible_content
from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.api.schemas import ContentOut, TTSRequest
from controller.broadcasting.contents import store_content
from controller.db.models import Content, ContentBlob, User
from controller.errors import LoaError, NotFound, TooLarge, TooMany

router = APIRouter(prefix="/contents", tags=["contents"])

_REUSED = ("sha256", "kind", "codec", "container", "mime", "size", "duration_ms", "source_name",
           "source_format", "text", "voice", "source_key")
_STATUS = {"too_large": 413, "not_audio": 415, "encoder": 500}


class _AudioRefused(LoaError):
    """An upload or text the audio pipeline refused (``audio_<code>``)."""

    def __init__(self, exc: AudioError):
        super().__init__(f"audio_{exc.code}", exc.message)
        self.status = _STATUS.get(exc.code, 422)  # type: ignore[misc]


def _audio_error(exc: AudioError) -> LoaError:
    return _AudioRefused(exc)


def _out(c: Content) -> ContentOut:
    return ContentOut(id=c.id, sha256=c.sha256, duration_s=c.duration_ms / 1000, size=c.size,
                      codec=c.codec, container=c.container, kind=c.kind,
                      source_name=c.source_name, text=c.text, created_at=c.created_at)


def _spend(rt: RuntimeDep, user: CurrentUser) -> None:
    """Preparing audio costs the controller seconds of CPU: each account has its share
    (``LOA_AUDIO_BURST`` at once, ``LOA_AUDIO_PER_HOUR`` after that)."""
    wait = rt.audio_work.wait_s(user.username)
    if wait > 0:
        raise TooMany("rate_limited", f"{user.username} has prepared much audio lately; try "
                      f"again in {math.ceil(wait)} s", retry_after_s=math.ceil(wait))


@router.get("", response_model=list[ContentOut])
def library(db: SessionDep, user: CurrentUser,
            kind: Annotated[Literal["file", "tts"] | None, Query(
                description="recordings (file) or texts read aloud (tts)")] = None,
            limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[ContentOut]:
    """The area's library: what accounts of one's area (and below) recorded or had read
    aloud, newest first, to schedule again without uploading it twice."""
    q = select(Content).order_by(Content.created_at.desc())
    allowed = scope(db, user)
    if allowed is not None:
        q = q.where(Content.created_by.in_(select(User.username).where(
            User.area_id.in_(allowed))))
    if kind is not None:
        q = q.where(Content.kind == kind)
    return [_out(c) for c in db.scalars(q.limit(limit))]


@router.post("", response_model=ContentOut, status_code=201)
def upload(file: Annotated[UploadFile, File(description="mp3, wav, m4a/aac, ogg/opus, amr")],
           db: SessionDep, rt: RuntimeDep, user: CurrentUser,
           chime: Annotated[bool | None, Query(description="chime before/after")] = None,
           ) -> ContentOut:
    _spend(rt, user)
    limit = int(rt.settings.max_upload_mb * 1024 * 1024)
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge("audio_too_large", f"The file is larger than the "
                       f"{rt.settings.max_upload_mb:g} MB limit.",
                       limit_mb=rt.settings.max_upload_mb)
    try:
        prepared = prepare_file(data, rt.audio_settings(chime))
    except AudioError as exc:
        raise _audio_error(exc) from None
    return _out(store_content(db, prepared, kind="file", user=user.username,
                       source_name=(file.filename or "")[:255] or None))


@router.post("/tts", response_model=ContentOut, status_code=201)
def tts(req: TTSRequest, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> ContentOut:
    settings = rt.audio_settings(req.chime)
    key = hashlib.sha256(json.dumps(
        [rt.tts.name, req.voice, req.speed, req.text, repr(settings)], ensure_ascii=False
    ).encode()).hexdigest()
    earlier = db.scalar(select(Content).where(Content.source_key == key).limit(1))
    if earlier is not None:  # same request as before: same audio, same content address
        c = Content(id=uuid.uuid4().hex, **{k: getattr(earlier, k) for k in _REUSED})
        c.created_by = user.username
        db.add(c)
        db.commit()
        return _out(c)
    _spend(rt, user)
    try:
        seg = rt.tts.synthesize(req.text, req.voice, req.speed)
        prepared = prepare_segment(seg, settings, source_format="tts")
    except AudioError as exc:
        raise _audio_error(exc) from None
    return _out(store_content(db, prepared, kind="tts", user=user.username, source_name=None,
                       text=req.text, voice=req.voice, source_key=key))


@router.get("/{content_id}", response_model=ContentOut)
def get_content(content_id: str, db: SessionDep, user: CurrentUser) -> ContentOut:
    return _out(visible_content(db, user, content_id))


@router.get("/{content_id}/audio", response_class=Response)
def get_audio(content_id: str, db: SessionDep, user: CurrentUser) -> Response:
    c = visible_content(db, user, content_id)
    blob = db.get(ContentBlob, c.sha256)
    if blob is None:
        raise NotFound("content_not_found", f"no content {content_id!r}", content=content_id)
    return Response(blob.data, media_type=c.mime,
                    headers={"Content-Disposition": f'inline; filename="{c.id}.{c.container}"'})
