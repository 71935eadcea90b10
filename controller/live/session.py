"""One airing of a stream: its source decoded and encoded once (:mod:`.encoder`), its packets
stamped on the controller's clock, five to a signed batch (100 ms), published once per
covering topic (protocol §6.1), and recorded.

A relay's stamps run on from ``start_at − latency`` one frame at a time, so a board hears
frame *k* at ``start_at + k × 20 ms``. A live voice is stamped on from when its first audio reaches
the controller (so it is heard ``latency`` later: mouth to speaker is the sender's network plus
that); audio that comes later than that (a phone's network, its recorder's 100 ms pieces) keeps its place
in the voice as long as the latency can still carry it to the boards in time, and only a longer
pause puts the stamps back in step with now, which the boards count as a gap. What is said
before ``start_at − latency`` is not aired, and a live voice sent faster than it can be
spoken is refused past ``AHEAD_S`` ahead of its speaker (counted). A relay's source faster
than real time (a file, Icecast's burst on connect) is held to at most ``AHEAD_S`` ahead of the
clock; one that falls behind (a stall, a slow network) is re-anchored to now, and what it owed
is a gap the boards count, never a delay that would grow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from controller.live.encoder import FRAME_MS, OpusEncoder
from devices.stream import pack_batch

log = logging.getLogger(__name__)

__all__ = ["AHEAD_S", "StreamSession"]

AHEAD_S = 2.0
BATCH_FRAMES = 5
#: a batch must reach the boards at least this long before it is due, or it is re-anchored
MARGIN_US = 300_000


def now_us() -> int:
    return time.time_ns() // 1000


class StreamSession(threading.Thread):
    def __init__(self, *, occurrence_id: str, topics: list[str], start_us: int,
                 duration_ms: int, latency_ms: int, open_source: Callable[[], Iterator[Any]],
                 key: SigningKey, publish: Callable[[str, bytes, int, bool], bool],
                 record: Path, on_done: Callable[[StreamSession], None], lead_s: float = 2.0,
                 live: bool = False):
        super().__init__(daemon=True, name=f"stream-{occurrence_id[:8]}")
        self.occurrence_id = occurrence_id
        self.topics = topics
        self.latency_us = latency_ms * 1000
        self.first_us = start_us - self.latency_us
        self.end_us = self.first_us + duration_ms * 1000
        self.open_source = open_source
        self.key, self.publish = key, publish
        self.record = record
        self.on_done = on_done
        self.lead_s = lead_s
        #: a live voice is stamped when it arrives (what was said before the start is not
        #: aired); a relay is stamped on from the start, one frame after another
        self.live = live
        self.stop_event = threading.Event()
        #: why it ended: slot_over, source_ended, source_lost, stopped, cancelled, failed
        self.reason: str | None = None
        self.detail = ""
        self.seq = 0
        self.frames_sent = 0
        self.reanchored_ms = 0
        self.too_fast = 0  # a live voice's frames refused: sent faster than real time
        self._pending: list[bytes] = []
        self._stamp = self.first_us
        #: how much later than its first audio a live voice's audio may come (the sender's
        #: network, a phone's bursts, the decoder's blocks) and still be stamped on from where
        #: it left off: what the latency leaves once a batch has filled and reached the boards
        #: ``MARGIN_US`` before it is due
        self._jitter_us = max(3 * FRAME_MS * 1000,
                              self.latency_us - MARGIN_US - BATCH_FRAMES * FRAME_MS * 1000)

    def stop(self, reason: str = "stopped") -> None:
        if self.reason is None:
            self.reason = reason
        self.stop_event.set()

    def run(self) -> None:
        wait = (self.first_us - now_us()) / 1e6 - self.lead_s
        if wait > 0 and self.stop_event.wait(wait):
            self._finish(None)
            return
        enc: OpusEncoder | None = None
        try:
            enc = OpusEncoder(self.record)
            for frame in self.open_source():
                if self.stop_event.is_set():
                    break
                for pkt in enc.push(frame):
                    self._add(pkt)
                if self._stamp >= self.end_us:
                    self.reason = self.reason or "slot_over"
                    break
                if self.stop_event.is_set():
                    break
            else:
                self.reason = self.reason or "source_ended"
        except Exception as exc:  # noqa: BLE001 - a dead URL, a timeout, bad data: all end it
            self.reason = self.reason or "source_lost"
            self.detail = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("stream %s: source lost: %s", self.occurrence_id, self.detail)
        self._finish(enc)

    def _finish(self, enc: OpusEncoder | None) -> None:
        if enc is not None:
            try:
                for pkt in enc.close():
                    if self._stamp < self.end_us:
                        self._add(pkt)
            except Exception:
                log.exception("stream %s: recording not finished", self.occurrence_id)
        self._send(last=True)
        self.reason = self.reason or "stopped"
        try:
            self.on_done(self)
        except Exception:
            log.exception("stream %s: not recorded", self.occurrence_id)

    def _add(self, pkt: bytes) -> None:
        now = now_us()
        stamp = self._stamp + len(self._pending) * FRAME_MS * 1000
        if self.live:
            said = now - FRAME_MS * 1000  # (the packet's audio has just come in whole)
            if said < self.first_us:
                return  # spoken before the broadcast began: not aired
            if stamp - said > AHEAD_S * 1_000_000:
                # sent faster than it can be spoken (a flood, a file pushed as a voice): a
                # live voice is never ahead of its speaker; refused, and counted
                self.too_fast += 1
                return
            if said - stamp > self._jitter_us or self.seq == 0 and not self._pending:
                # the voice's first audio, or audio after a pause: in step with now
                self._send()
                self._stamp = said
            self._pending.append(pkt)
            if len(self._pending) == BATCH_FRAMES:
                self._send()
            return
        if stamp + self.latency_us - now < MARGIN_US:
            # behind the clock: what is pending would be heard late; start again from now
            self._send()
            fresh = now + MARGIN_US - self.latency_us
            self.reanchored_ms += max(0, fresh - self._stamp) // 1000
            self._stamp = fresh
        self._pending.append(pkt)
        if len(self._pending) == BATCH_FRAMES:
            self._send()
            ahead = (self._stamp - now_us()) / 1e6 - AHEAD_S
            if ahead > 0:
                self.stop_event.wait(ahead)

    def _send(self, last: bool = False) -> None:
        if not self._pending and not last:
            return
        # numbered by the index of its first frame since the stream's start: a restarted
        # session, a re-anchored one, goes on where the clock is, and what it skipped is a
        # gap the boards can count
        index = max(0, (self._stamp - self.first_us) // (FRAME_MS * 1000))
        batch = pack_batch(self.key, self.occurrence_id, index, self._stamp, self._pending,
                           last=last, first=self.seq == 0)
        for topic in self.topics:
            self.publish(topic, batch, 0, False)
        self.seq += 1
        self.frames_sent += len(self._pending)
        self._stamp += len(self._pending) * FRAME_MS * 1000
        self._pending = []
