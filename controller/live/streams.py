"""The stream sessions of the programme's live and relay items, and the live voices coming in.

A stream item is a broadcast like any other: scheduled, approved, targeted, preempted,
cancelled, proven per village. Its content row is a *descriptor* (``container`` =
``stream``; its blob is ``{"kind": "relay", "url": …}`` or ``{"kind": "live"}``), and its
occurrence, once aired, points at the recording. When the dispatcher sends an occurrence's
``play``, :meth:`Streams.ensure` starts the session that sends its frames; a cancel stops it.
After a controller restart the dispatcher (``resume_streams``) calls :meth:`Streams.ensure`
again for every stream item whose slot is still running: a relay resumes live; a live voice,
whose sender was connected to the old process, waits for it briefly and then ends cleanly
(its last batch tells the boards, who report what they played).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from nacl.signing import SigningKey
from sqlalchemy.orm import Session, sessionmaker

from controller.db.models import Alert, Content, ContentBlob, Occurrence, utcnow
from controller.errors import Invalid
from controller.live.encoder import FRAME_MS, frames_of
from controller.live.session import StreamSession
from controller.settings import Settings
from devices.stream import StreamSpec

log = logging.getLogger(__name__)

__all__ = ["LivePipe", "Streams", "relay_descriptor"]

INGEST_FORMATS = {
    # what a browser's MediaRecorder sends (audio/webm;codecs=opus), an Ogg/Opus file or
    # stream, and raw 16-bit PCM (48 kHz mono) from a simple client
    "webm": ("matroska", {}),
    "ogg": ("ogg", {}),
    "pcm": ("s16le", {"sample_rate": "48000", "ch_layout": "mono"}),
}


def relay_descriptor(settings: Settings, url: str) -> dict[str, str]:
    """A relay source, checked: http(s) only, and one of ``LOA_RELAY_HOSTS`` when set."""
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise Invalid("relay_url_invalid", "a relay source is an http:// or https:// URL",
                      url=url[:200])
    if settings.relay_hosts and u.hostname.lower() not in settings.relay_hosts:
        raise Invalid("relay_host_not_allowed", f"{u.hostname} is not one of the relay hosts "
                      "this controller may pull from (LOA_RELAY_HOSTS)", host=u.hostname)
    return {"kind": "relay", "url": url}


def descriptor_content(db: Session, descriptor: dict[str, Any], duration_s: int,
                       created_by: str, name: str, container: str = "stream") -> Content:
    """The content row of a stream item (``container`` ``stream``) or of a board's own input
    (``line``): its blob is the descriptor (content-addressed like any blob), its duration
    the slot's."""
    data = json.dumps(descriptor, sort_keys=True).encode()
    sha = hashlib.sha256(data).hexdigest()
    if db.get(ContentBlob, sha) is None:
        db.add(ContentBlob(sha256=sha, data=data))
        db.flush()  # (no relationship orders the two inserts: the blob first)
    c = Content(id=uuid.uuid4().hex, sha256=sha, kind=descriptor["kind"], codec="opus",
                container=container, mime="application/json", size=len(data),
                duration_ms=duration_s * 1000, source_name=name[:255],
                source_format=descriptor["kind"], created_by=created_by)
    db.add(c)
    db.flush()
    return c


class LivePipe(io.RawIOBase):
    """What a live sender's audio goes through: the WebSocket puts, the encoder's decoder
    reads (blocking; ``timeout_s`` of silence from the sender is the end of the source)."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=512)
        self._buf = b""
        self.fmt: str | None = None
        self.connected = threading.Event()
        self.timed_out = False
        self.dropped = 0
        self.bytes_in = 0

    def readable(self) -> bool:
        return True

    def feed(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            self._q.put_nowait(data)
        except queue.Full:
            self.dropped += 1  # the encoder is far behind: a gap, not unbounded memory

    def end(self) -> None:
        try:
            self._q.put_nowait(None)
        except queue.Full:
            self._q.get_nowait()
            self._q.put_nowait(None)

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                item = self._q.get(timeout=self.timeout_s)
            except queue.Empty:
                self.timed_out = True
                return 0
            if item is None:
                self._q.put_nowait(None)  # (every later read sees the end too)
                return 0
            self._buf = item
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class Streams:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], key: SigningKey,
                 publish: Callable[[str, bytes, int, bool], bool]):
        self.settings = settings
        self.sessions = sessions
        self.key, self.publish = key, publish
        self.folder = settings.data_dir / "recordings"
        self.running: dict[str, StreamSession] = {}
        self.pipes: dict[str, LivePipe] = {}
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def frames_too_fast(self) -> int:
        """A live voice's frames refused because its sender sent faster than real time."""
        with self._lock:
            running = list(self.running.values())
        return self.counters["frames_too_fast"] + sum(s.too_fast for s in running)

    # --- live senders --------------------------------------------------------------------

    def pipe(self, live_id: str) -> LivePipe:
        with self._lock:
            p = self.pipes.get(live_id)
            if p is None:
                p = self.pipes[live_id] = LivePipe(self.settings.stream_source_timeout_s)
            return p

    def _live_source(self, live_id: str) -> Callable[[], Iterator[Any]]:
        def open_source() -> Iterator[Any]:
            p = self.pipe(live_id)
            if not p.connected.wait(self.settings.stream_source_timeout_s + 10):
                raise TimeoutError("the live sender never connected")
            fmt, options = INGEST_FORMATS[p.fmt or "webm"]
            yield from frames_of(p, fmt, options, self.settings.stream_source_timeout_s)
            if p.timed_out:
                raise TimeoutError("the live sender went silent")
        return open_source

    # --- sessions ---------------------------------------------------------------------------

    def ensure(self, occurrence_id: str, content: Content, spec: StreamSpec,
               start_at: datetime) -> None:
        """Start the session that sends this occurrence's frames, unless it runs already."""
        with self._lock:
            s = self.running.get(occurrence_id)
            if s is not None and s.is_alive():
                return
            with self.sessions() as db:
                blob = db.get(ContentBlob, content.sha256)
                desc = json.loads(blob.data) if blob else {}
            if desc.get("kind") == "relay":
                url = desc["url"]
                timeout = self.settings.stream_source_timeout_s

                def open_source() -> Iterator[Any]:
                    # a radio is probed on its first half second, not FFmpeg's default five
                    # (an Icecast stream after its burst comes in real time: five seconds late)
                    return frames_of(url, None, {"reconnect": "1", "probesize": "32768",
                                                 "analyzeduration": "500000"}, timeout)
            else:
                open_source = self._live_source(content.id)
            self.folder.mkdir(parents=True, exist_ok=True)
            s = StreamSession(
                occurrence_id=occurrence_id, topics=spec.topics,
                start_us=int(start_at.timestamp() * 1e6), duration_ms=spec.duration_ms,
                latency_ms=spec.latency_ms, open_source=open_source, key=self.key,
                publish=self.publish, record=self.folder / f"{occurrence_id}.ogg",
                on_done=self._done, live=desc.get("kind") != "relay")
            self.running[occurrence_id] = s
            self.counters["started"] += 1
            s.start()

    def stop(self, occurrence_id: str, reason: str) -> None:
        s = self.running.get(occurrence_id)
        if s is not None:
            s.stop(reason)

    def stop_live(self, live_id: str) -> None:
        """The sender pressed stop: its audio ends, the stream's last batch follows."""
        self.pipe(live_id).end()

    def _alert(self, s: StreamSession) -> None:
        with self.sessions() as db:
            occ = db.get(Occurrence, s.occurrence_id)
            if occ is None:
                return
            bc = occ.broadcast
            now = utcnow()
            db.add(Alert(cluster_id=None, area_id=bc.commune_id or bc.origin_area_id,
                         code="stream_source_lost", subject=bc.id[:128], severity="warning",
                         message=f"the source of {bc.title or bc.id} stopped after "
                                 f"{s.frames_sent * FRAME_MS / 1000:.0f} s: {s.detail}"[:500],
                         opened_at=now, last_seen_at=now, hold_s=0))
            db.commit()
        log.warning("stream %s: source lost (%s)", s.occurrence_id, s.detail)

    def _done(self, s: StreamSession) -> None:
        """Keep the recording as content, attached to the occurrence it is the record of;
        a source that died opens a ``stream_source_lost`` alert for the item's area."""
        self.counters[f"ended_{s.reason}"] += 1
        self.counters["frames_too_fast"] += s.too_fast
        with self._lock:
            self.running.pop(s.occurrence_id, None)
        if s.reason == "source_lost":
            self._alert(s)
        if not s.record.exists() or s.frames_sent == 0:
            return
        data = s.record.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        with self.sessions() as db:
            occ = db.get(Occurrence, s.occurrence_id)
            if occ is None:
                return
            if db.get(ContentBlob, sha) is None:
                db.add(ContentBlob(sha256=sha, data=data))
                db.flush()
            rec = Content(id=uuid.uuid4().hex, sha256=sha, kind="record", codec="opus",
                          container="ogg", mime="audio/ogg", size=len(data),
                          duration_ms=s.frames_sent * 20, created_by="loa",
                          source_name=f"recording of {occ.broadcast_id} ({s.reason})")
            db.add(rec)
            db.flush()
            occ.content_id = rec.id
            db.commit()
        s.record.unlink(missing_ok=True)
        log.info("stream %s ended (%s): %d frames, recorded as %s", s.occurrence_id, s.reason,
                 s.frames_sent, rec.id)
