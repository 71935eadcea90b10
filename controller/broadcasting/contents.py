"""Contents: what can be broadcast (a recording, speech from text, a CAP alert's audio),
stored once per sha256 of its prepared audio."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audio import PreparedAudio
from controller.db.models import Content, ContentBlob

__all__ = ["store_content"]


def store_content(db: Session, p: PreparedAudio, *, kind: str, user: str, source_name: str | None,
           text: str | None = None, voice: str | None = None,
           source_key: str | None = None, commit: bool = True) -> Content:
    """Blob (once per sha256) and content row in one transaction: all or nothing.
    ``commit=False``: only flushed, for a caller that still checks the request (a refusal
    then rolls it back, and the refused request leaves no audio behind)."""
    if db.get(ContentBlob, p.sha256) is None:
        db.add(ContentBlob(sha256=p.sha256, data=p.data))
        try:
            db.flush()
        except IntegrityError:  # same audio stored concurrently
            db.rollback()
    c = Content(id=uuid.uuid4().hex, sha256=p.sha256, kind=kind, codec=p.codec,
                container=p.container, mime=p.mime, size=len(p.data), duration_ms=p.duration_ms,
                source_name=source_name, source_format=p.source_format, text=text, voice=voice,
                source_key=source_key, created_by=user)
    db.add(c)
    if commit:
        db.commit()
    else:
        db.flush()
    return c
