from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest

from audio.ffmpeg import run_ffmpeg

# phone/recorder formats officers actually have: (name, ffmpeg output args)
FORMATS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-f", "ipod"],
    "ogg": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "amr": ["-ar", "8000", "-ac", "1", "-c:a", "libopencore_amrnb", "-b:a", "12.2k", "-f", "amr"],
}


@functools.cache
def encoded(fmt: str, seconds: float = 3.0, volume: float = 1.0) -> bytes:
    """A stereo speech-like test signal: a 440 Hz tone (peak -18 dBFS at volume 1) with 3 Hz tremolo."""
    with_src = ["-f", "lavfi", "-i",
                f"sine=frequency=440:sample_rate=44100:duration={seconds}",
                "-af", f"tremolo=f=3:d=0.8,volume={volume},aformat=channel_layouts=stereo"]
    out = FORMATS[fmt]
    tmp = "pipe:1"
    if fmt == "m4a":  # mp4 needs a seekable output
        with tempfile.NamedTemporaryFile(suffix=".m4a") as f:
            run_ffmpeg(["-y", *with_src, *out, f.name])
            return Path(f.name).read_bytes()
    data, _ = run_ffmpeg([*with_src, *out, tmp])
    return data


@pytest.fixture
def sample() -> object:
    return encoded
