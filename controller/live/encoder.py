"""Audio in, 20 ms Opus packets out, with PyAV (FFmpeg's libraries, libopus included in its
wheels): any source PyAV can open (Icecast/SHOUTcast mp3, aac, ogg; HLS; WebM/Opus from a
browser; raw PCM) is decoded, resampled to 48 kHz mono once, encoded once, and the same
packets are muxed into an Ogg file: the recording the station keeps."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av

log = logging.getLogger(__name__)

__all__ = ["FRAME_MS", "RATE", "OpusEncoder", "frames_of"]

RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000


class OpusEncoder:
    """Feed decoded frames (any rate or layout); take 20 ms Opus packets. ``record``: the
    Ogg/Opus file the same packets are written to."""

    def __init__(self, record: Path, bitrate: int = 32_000):
        self.record = record
        self._out: Any = av.open(str(record), "w", format="ogg")
        self._stream: Any = self._out.add_stream("libopus", rate=RATE)
        self._stream.layout = "mono"
        self._stream.bit_rate = bitrate
        self._stream.codec_context.options = {"application": "audio",
                                              "frame_duration": str(FRAME_MS)}
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE,
                                            frame_size=FRAME_SAMPLES)
        self.packets = 0

    def _encode(self, frames: list[Any]) -> list[bytes]:
        out: list[bytes] = []
        for f in frames:
            for p in self._stream.encode(f):
                out.append(bytes(p))
                self._out.mux(p)
        self.packets += len(out)
        return out

    def push(self, frame: Any) -> list[bytes]:
        frame.pts = None  # (a source's timestamps jump; the stamps are ours)
        return self._encode(self._resampler.resample(frame))

    def silence(self, ms: int) -> list[bytes]:
        """Packets of silence (a source that stalls is heard as silence, then stopped)."""
        n = RATE * ms // 1000
        f = av.AudioFrame(format="s16", layout="mono", samples=n)
        f.planes[0].update(bytes(2 * n))
        f.sample_rate = RATE
        return self.push(f)

    def close(self) -> list[bytes]:
        """The last packets (the resampler's and encoder's tails); the file is finished."""
        try:
            rest = self._encode(self._resampler.resample(None))
            for p in self._stream.encode(None):
                rest.append(bytes(p))
                self._out.mux(p)
            return rest
        finally:
            self._out.close()


def frames_of(source: Any, fmt: str | None = None, options: dict[str, str] | None = None,
              timeout_s: float = 5.0) -> Iterator[Any]:
    """Decoded audio frames of a URL or a file-like object, until it ends. A network source
    that says nothing for ``timeout_s`` raises (``av.error.FFmpegError``)."""
    container: Any = av.open(source, "r", format=fmt, options=options or {},
                             timeout=(timeout_s, timeout_s))
    try:
        stream = next(s for s in container.streams if s.type == "audio")
        yield from container.decode(stream)
    finally:
        container.close()
