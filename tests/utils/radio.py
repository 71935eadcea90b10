"""A radio station for relays to pull: an mp3 made with marks at known times, served as an
Icecast server serves a stream (an endless body, sent in real time after a short burst)."""

from __future__ import annotations

import contextlib
import http.server
import math
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av

__all__ = ["RATE", "Radio", "on_air", "tone_mp3"]

RATE = 48_000


def tone_mp3(path: Path, seconds: float, marks: list[float]) -> None:
    """A quiet 300 Hz bed with loud 1 kHz marks of 100 ms at ``marks`` (s): something whose
    timing can be found again in what a board played."""
    out: Any = av.open(str(path), "w", format="mp3")
    st: Any = out.add_stream("libmp3lame", rate=RATE)
    st.layout = "mono"
    n = int(seconds * RATE)
    pcm = bytearray()
    for i in range(n):
        t = i / RATE
        loud = any(m <= t < m + 0.1 for m in marks)
        v = (0.8 * math.sin(2 * math.pi * 1000 * t)) if loud else 0.05 * math.sin(2 * math.pi * 300 * t)
        pcm += struct.pack("<h", int(v * 32767))
    frame = av.AudioFrame(format="s16", layout="mono", samples=n)
    frame.planes[0].update(bytes(pcm))
    frame.sample_rate = RATE
    res = av.AudioResampler(format=st.codec_context.format.name, layout="mono", rate=RATE,
                            frame_size=st.codec_context.frame_size or 1152)
    for f in res.resample(frame) + res.resample(None):
        for p in st.encode(f):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
    out.close()


class Radio(http.server.ThreadingHTTPServer):
    """An internet radio as Icecast serves one: an endless mp3 body, sent in real time."""

    def __init__(self, mp3: bytes, seconds: float, stall_after: float | None = None):
        self.mp3, self.seconds, self.stall_after = mp3, seconds, stall_after
        self.stalled = threading.Event()
        super().__init__(("127.0.0.1", 0), RadioHandler)

    def url(self, mount: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/{mount}"


class RadioHandler(http.server.BaseHTTPRequestHandler):
    server: Radio

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.end_headers()
        data, secs = self.server.mp3, self.server.seconds
        rate = len(data) / secs  # bytes per second of audio
        start = time.monotonic()
        sent = 0
        try:
            while sent < len(data):
                if self.server.stall_after is not None and \
                        sent / rate >= self.server.stall_after:
                    self.server.stalled.wait(60)  # the station's encoder hangs: silence
                    return
                chunk = data[sent:sent + 4096]
                self.wfile.write(chunk)
                sent += len(chunk)
                ahead = sent / rate - (time.monotonic() - start) - 0.5
                if ahead > 0:
                    time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_: object) -> None:
        pass




@contextlib.contextmanager
def on_air(folder: Path, seconds: float, marks: list[float],
           stall_after: float | None = None) -> Iterator[Radio]:
    """A station on the air for the ``with`` block: ``radio.url(mount)`` to listen."""
    mp3 = folder / "radio.mp3"
    tone_mp3(mp3, seconds, marks)
    radio = Radio(mp3.read_bytes(), seconds, stall_after)
    threading.Thread(target=radio.serve_forever, daemon=True).start()
    try:
        yield radio
    finally:
        radio.stalled.set()
        radio.shutdown()
        radio.server_close()
