"""Real-time audio streams (protocol §6.1): a live voice or a relayed radio, carried as signed
batches of Opus frames on an area's stream topic, each frame stamped on the controller's clock.

A stream is announced by a ``play`` whose body carries ``stream`` (a :class:`StreamSpec`) in
place of ``content``; the board subscribes to the spec's topics that are its own and plays
every frame at ``stamp + latency_ms`` on the controller's clock as it keeps it (§4.5).

Batch layout (big-endian), published QoS 0, never retained:

======  =====  ==============================================================
offset  bytes  field
======  =====  ==============================================================
0       4      magic ``LOAS``
4       1      version, 1
5       1      flags: bit 0 = the last batch of the stream (it ended); bit 1 = its first
6       16     stream id (the spec's ``stream_id``, 32 hex digits, as bytes)
22      4      the index of the batch's first frame since the stream's start (stamp −
               (start_at − latency)) / frame_ms: the next batch's is this + n; a range
               that never comes is a gap
26      8      stamp of the batch's first frame: controller clock, µs since the epoch
34      1      frames in the batch, n (0-50)
35      ...    n × (2-byte length, that many bytes of one Opus packet); frame i of the
               batch is stamped ``stamp + i × frame_ms``
end-64  64     Ed25519 signature of every byte before it, with the controller's key
======  =====  ==============================================================

A board MUST drop (and count) a batch that is malformed, too large, signed by no
provisioned key, or for a stream it was not told of; it MUST NOT play a frame whose play
time has passed by more than one frame (it was late: a gap, counted) nor one more than
``latency_ms`` + 10 s ahead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field

from devices import topics

__all__ = ["MAGIC", "MAX_BATCH_BYTES", "Batch", "StreamError", "StreamSpec", "pack_batch",
           "stream_topic", "unpack_batch"]

MAGIC = b"LOAS"
_HEAD = struct.Struct(">4sBB16sIQB")
SIG = 64
MAX_BATCH_BYTES = 16_384
FLAG_LAST = 0x01
FLAG_FIRST = 0x02


class StreamError(ValueError):
    """A batch that must be dropped."""


class StreamSpec(BaseModel):
    """What a ``play`` carries for a stream instead of a content manifest."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    stream_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    #: the stream topics the batches are published on (one per covering area or cluster);
    #: a board subscribes to those that are its own
    topics: list[str] = Field(min_length=1, max_length=64)
    codec: str = "opus"
    sample_rate: int = Field(48_000, ge=8_000, le=48_000)
    channels: int = Field(1, ge=1, le=2)
    frame_ms: int = Field(20, ge=5, le=120)
    #: each frame is heard this long after its stamp (the jitter buffer's depth)
    latency_ms: int = Field(1_000, ge=100, le=10_000)
    #: "live" (ends when its last batch says so, or is cancelled) or "relay"
    kind: str = Field("live", pattern=r"^(live|relay)$")
    #: how long it airs from ``start_at`` (a relay's slot; a live session's longest)
    duration_ms: int = Field(gt=0, le=24 * 3600 * 1000)


def stream_topic(area_or_cluster: str, stream_id: str, *, cluster: bool = False) -> str:
    kind = "cluster" if cluster else "area"
    return f"{topics.ROOT}/{kind}/{topics.check_id(area_or_cluster)}/stream/{stream_id}"


@dataclass(frozen=True, slots=True)
class Batch:
    stream_id: str
    seq: int
    stamp_us: int
    frames: list[bytes]
    last: bool = False
    first: bool = False


def pack_batch(key: SigningKey, stream_id: str, seq: int, stamp_us: int,
               frames: Iterable[bytes], last: bool = False, first: bool = False) -> bytes:
    frames = list(frames)
    if len(frames) > 50:
        raise ValueError("at most 50 frames per batch")
    flags = (FLAG_LAST if last else 0) | (FLAG_FIRST if first else 0)
    body = bytearray(_HEAD.pack(MAGIC, 1, flags, bytes.fromhex(stream_id),
                                seq, stamp_us, len(frames)))
    for f in frames:
        body += struct.pack(">H", len(f)) + f
    body += key.sign(bytes(body)).signature
    if len(body) > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {len(body)} bytes: over {MAX_BATCH_BYTES}")
    return bytes(body)


def unpack_batch(data: bytes, keys: Iterable[VerifyKey], verified: bool = False) -> Batch:
    """The batch, once its signature verifies with one of ``keys`` (``verified``: the caller
    checked these very bytes already, e.g. for another board of the same process)."""
    if len(data) > MAX_BATCH_BYTES or len(data) < _HEAD.size + SIG:
        raise StreamError("size")
    magic, version, flags, sid, seq, stamp, n = _HEAD.unpack_from(data)
    if magic != MAGIC or version != 1:
        raise StreamError("not a v1 stream batch")
    if not verified:
        signed, sig = data[:-SIG], data[-SIG:]
        for k in keys:
            try:
                k.verify(signed, sig)
                break
            except BadSignatureError:
                continue
        else:
            raise StreamError("bad signature")
    pos, end, frames = _HEAD.size, len(data) - SIG, []
    for _ in range(n):
        if pos + 2 > end:
            raise StreamError("truncated")
        (size,) = struct.unpack_from(">H", data, pos)
        pos += 2
        if pos + size > end:
            raise StreamError("truncated")
        frames.append(data[pos:pos + size])
        pos += size
    if pos != end:
        raise StreamError("trailing bytes")
    return Batch(sid.hex(), seq, stamp, frames, bool(flags & FLAG_LAST),
                 bool(flags & FLAG_FIRST))
