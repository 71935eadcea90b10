"""Recognise accepted audio containers by their first bytes, before any decoder sees them."""

from __future__ import annotations

__all__ = ["ACCEPTED", "sniff"]

ACCEPTED = "mp3, wav, m4a/aac, ogg/opus, amr, flac, webm"


def sniff(head: bytes) -> str | None:
    """Return a format name for ``head`` (the first bytes) or None when it is not audio we take."""
    if head.startswith(b"ID3"):
        return "mp3"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head[4:8] == b"ftyp":
        return "mp4"  # m4a, 3gp from phones
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "aac"  # ADTS
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mp3"  # MPEG audio frame sync without an ID3 tag
    return None


def describe_non_audio(head: bytes) -> str:
    """A human hint of what the bytes are instead."""
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return "an image"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP/Office document"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "an unknown binary file"
