"""A board's side of a real-time stream (protocol §6.1): the jitter buffer that plays each
batch of frames at its stamp plus the stream's latency, on the controller's clock as the
board keeps it (§4.5); what it heard, what was missing, and, with ``--record-dir``, the
Opus packets it played with their times."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Callable
from pathlib import Path

from devices.messages import StreamStats
from devices.stream import Batch, StreamSpec

__all__ = ["StreamTap"]

#: a batch further ahead of its play time than this is refused (a flood, a wrong stamp)
MAX_AHEAD_US = 10_000_000


class StreamTap:
    def __init__(self, spec: StreamSpec, start_us: int, clock_us: Callable[[], int],
                 playing: Callable[[], bool], on_end: Callable[[], None],
                 record: Path | None = None):
        self.spec = spec
        self.start_us = start_us
        self._clock_us = clock_us  # the controller's clock as the board keeps it
        self._playing = playing
        self._on_end = on_end
        self.buffer: dict[int, Batch] = {}
        self.next_seq: int | None = None
        self.played_ms = self.gaps = self.gap_ms = 0
        self.joined_late = False
        self.dropped = 0  # late, too far ahead, repeated
        self.ended = False
        self._arrived = asyncio.Event()
        self._record = record
        self._task: asyncio.Task[None] | None = None

    def stats(self) -> StreamStats:
        return StreamStats(played_ms=self.played_ms, gaps=self.gaps, gap_ms=self.gap_ms,
                           joined_late=self.joined_late)

    def add(self, batch: Batch) -> None:
        due = batch.stamp_us + self.spec.latency_ms * 1000
        now = self._clock_us()
        if (self.next_seq is not None and batch.seq < self.next_seq) or batch.seq in self.buffer \
                or due - now > MAX_AHEAD_US + self.spec.latency_ms * 1000:
            self.dropped += 1
            return
        self.buffer[batch.seq] = batch
        self._arrived.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _sleep_until(self, due_us: int) -> None:
        while (delay := (due_us - self._clock_us()) / 1e6) > 0:
            await asyncio.sleep(min(delay, 0.5))

    async def _run(self) -> None:
        frame_us = self.spec.frame_ms * 1000
        latency_us = self.spec.latency_ms * 1000
        while not self.buffer:
            self._arrived.clear()
            await self._arrived.wait()
        first = min(self.buffer)
        self.next_seq = first
        stamp = self.buffer[first].stamp_us
        # a board that comes in after the stream began (its first batch gone by) plays
        # from where the stream is now
        self.joined_late = not self.buffer[first].first
        size = 5
        while True:
            batch = self._take(size)
            due = (batch.stamp_us if batch else stamp) + latency_us
            await self._sleep_until(due)
            if batch is None:
                batch = self._take(size)  # (came just in time)
            if batch is None:  # missing, or too late to play: a gap in what is heard
                self.gaps += 1
                self.gap_ms += size * self.spec.frame_ms
            elif self._playing() or (due <= self.start_us + frame_us * size
                                     and await self._started()):
                heard = time.time_ns()
                self.played_ms += len(batch.frames) * self.spec.frame_ms
                if self._record is not None:
                    # when the board meant to play it, in true time: its clock's reading of
                    # ``due`` (what its own clock error makes of it); ``heard`` adds the
                    # simulator's own scheduling delay (hundreds of boards share one loop)
                    aimed = due - (self._clock_us() - heard // 1000)
                    self._write(batch, due, heard, aimed)
            # batches are numbered by their first frame's index: the next one follows on
            if batch is not None:
                size = len(batch.frames) or size
                stamp = batch.stamp_us + len(batch.frames) * frame_us
                self.next_seq = batch.seq + max(len(batch.frames), 1)
                if batch.last:
                    self.ended = True
                    self._on_end()
                    return
            else:
                stamp += size * frame_us
                self.next_seq += size

    async def _started(self) -> bool:
        """At the very start the player takes the speakers a moment after the first batch
        is due (both wait for the same instant): the first batch waits for it, briefly."""
        for _ in range(20):
            if self._playing():
                return True
            await asyncio.sleep(0.002)
        return False

    def _take(self, size: int) -> Batch | None:
        """The batch for the frames due next: the one numbered ``next_seq``, or one that
        starts within the next ``size`` frames (a stream re-anchored by its controller, a
        restarted one, lands off the old grid); what lies wholly behind is dropped."""
        assert self.next_seq is not None
        for q in [q for q in self.buffer if q < self.next_seq]:
            del self.buffer[q]
            self.dropped += 1
        cand = min(self.buffer, default=None)
        if cand is not None and cand < self.next_seq + size:
            return self.buffer.pop(cand)
        return None

    def _write(self, batch: Batch, due_us: int, heard_ns: int, aimed_us: int) -> None:
        """One line per batch heard, and its Opus packets (2-byte length before each)."""
        assert self._record is not None
        self._record.parent.mkdir(parents=True, exist_ok=True)
        with self._record.with_suffix(".stream.jsonl").open("a") as f:
            f.write(json.dumps({"seq": batch.seq, "stamp_us": batch.stamp_us,
                                "frames": len(batch.frames), "due_us": due_us,
                                "heard_us": heard_ns // 1000, "aimed_us": aimed_us}) + "\n")
        with self._record.with_suffix(".opus-packets").open("ab") as f:
            for fr in batch.frames:
                f.write(struct.pack(">H", len(fr)) + fr)
