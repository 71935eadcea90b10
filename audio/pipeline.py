"""Decode → mono → trim → loudness-normalise (EBU R128) → chimes → encode → sha256.

The result is content-addressed: the same input and settings always give the same bytes
(ffmpeg runs bit-exact), so the same bulletin uploaded twice is stored and sent once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field

from audio.chime import chime
from audio.errors import AudioError
from audio.ffmpeg import run_ffmpeg
from audio.sniff import ACCEPTED, describe_non_audio, sniff

with warnings.catch_warnings():  # pydub warns at import when ffmpeg is not on PATH
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment
    from pydub.silence import detect_leading_silence

log = logging.getLogger(__name__)

__all__ = [
    "CODECS",
    "AudioSettings",
    "PreparedAudio",
    "decode",
    "measure_loudness",
    "prepare_file",
    "prepare_segment",
]

WORK_RATE = 48_000

#: leading and trailing audio this far below the recording's peak counts as silence (never
#: above ``AudioSettings.silence_dbfs``): a quiet upload's trailing speech is not cut
TRIM_BELOW_PEAK_DB = 40.0

#: codec name -> (ffmpeg encoder args, container, mime type)
CODECS: dict[str, tuple[list[str], str, str]] = {
    "opus": (["-c:a", "libopus", "-application", "audio", "-f", "ogg"], "ogg", "audio/ogg"),
    "mp3": (["-c:a", "libmp3lame", "-f", "mp3"], "mp3", "audio/mpeg"),
    "pcm_s16le": (["-c:a", "pcm_s16le", "-f", "wav"], "wav", "audio/wav"),
}


@dataclass(frozen=True, slots=True)
class AudioSettings:
    target_lufs: float = -16.0
    true_peak_db: float = -2.0  # Opus adds ~0.7 dB of overshoot: ≤ -1 dBTP after decoding
    codec: str = "opus"
    bitrate: str = "32k"
    sample_rate: int = 48_000
    max_input_bytes: int = 50 * 1024 * 1024
    max_duration_s: float = 45 * 60.0  # the longest rural programme slot
    min_duration_s: float = 0.3
    silence_dbfs: float = -50.0
    trim_silence: bool = True
    chime_before: bool = False
    chime_after: bool = False


@dataclass(frozen=True, slots=True)
class PreparedAudio:
    data: bytes
    sha256: str
    duration_ms: int
    codec: str
    container: str
    mime: str
    source_format: str | None = None
    meta: dict[str, object] = field(default_factory=dict)


def decode(data: bytes, settings: AudioSettings = AudioSettings()) -> tuple[AudioSegment, str]:
    """Validate and decode ``data`` to a mono 48 kHz 16-bit segment. Raises AudioError."""
    if not data:
        raise AudioError("empty", "The file is empty.")
    if len(data) > settings.max_input_bytes:
        raise AudioError(
            "too_large",
            f"The file is {len(data) / 1e6:.1f} MB; the limit is "
            f"{settings.max_input_bytes / 1e6:.0f} MB.",
        )
    fmt = sniff(data[:64])
    if fmt is None:
        raise AudioError(
            "not_audio",
            f"This is {describe_non_audio(data[:512])}, not audio. Accepted: {ACCEPTED}.",
        )
    limit = settings.max_duration_s + 1
    with tempfile.NamedTemporaryFile(suffix="." + fmt) as src:
        src.write(data)
        src.flush()
        _refuse_by_header(src.name, fmt, settings)
        try:
            pcm, _ = run_ffmpeg(
                ["-i", src.name, "-map", "0:a:0", "-vn", "-t", f"{limit:.0f}",
                 "-ac", "1", "-ar", str(WORK_RATE), "-f", "s16le", "-"],
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or "").strip().splitlines()[-1:] or ["decoder error"]
            raise AudioError(
                "corrupt", f"The {fmt} file could not be decoded ({detail[0][:160]})."
            ) from None
        except subprocess.TimeoutExpired:
            raise AudioError("corrupt", "Decoding took too long; the file may be damaged.") from None
    if len(pcm) < 2:
        raise AudioError("empty", "The file contains no audio samples.")
    seg = AudioSegment(data=pcm[: len(pcm) // 2 * 2], sample_width=2, frame_rate=WORK_RATE,
                       channels=1)
    return seg, fmt


#: below this a file is not speech anyone recorded, and resampling it up to WORK_RATE costs
#: far more than the file's size suggests (4 KB at 1 Hz is 33 minutes, 380 MB to decode)
MIN_SAMPLE_RATE = 4000

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_RATE = re.compile(r"Stream #\d+:\d+.*?: Audio: .*?, (\d+) Hz")


def _refuse_by_header(path: str, fmt: str, settings: AudioSettings) -> None:
    """What the container says, read before any decoding (about 50 ms whatever the file):
    a sample rate no recording has, or a duration past the limit, is refused at once."""
    try:
        run_ffmpeg(["-i", path], loglevel="info", timeout=10)
        err = ""
    except subprocess.CalledProcessError as exc:  # (no output named: it always "fails")
        err = exc.stderr or ""
    except subprocess.TimeoutExpired:
        raise AudioError("corrupt", "Reading the file's header took too long; the file may "
                                    "be damaged.") from None
    rate = _RATE.search(err)
    if rate and int(rate.group(1)) < MIN_SAMPLE_RATE:
        raise AudioError("sample_rate", f"The {fmt} file's sample rate is {rate.group(1)} Hz; "
                                        f"recordings have at least {MIN_SAMPLE_RATE} Hz.")
    dur = _DURATION.search(err)
    if dur:
        h, m, sec = dur.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(sec)
        if seconds > settings.max_duration_s + 1:
            raise AudioError("too_long", f"The audio is {seconds / 60:.0f} minutes long; the "
                                         f"limit is {settings.max_duration_s / 60:.0f} minutes.")


def prepare_file(data: bytes, settings: AudioSettings = AudioSettings()) -> PreparedAudio:
    seg, fmt = decode(data, settings)
    return prepare_segment(seg, settings, source_format=fmt)


def prepare_segment(seg: AudioSegment, settings: AudioSettings = AudioSettings(),
                    source_format: str | None = None) -> PreparedAudio:
    """Normalise, add chimes, encode. Raises AudioError for silent/too short/too long audio."""
    if settings.codec not in CODECS:
        raise AudioError("encoder", f"unknown codec {settings.codec!r}")
    seg = seg.set_channels(1).set_frame_rate(WORK_RATE).set_sample_width(2)
    if len(seg) / 1000 > settings.max_duration_s:
        raise AudioError(
            "too_long",
            f"The audio is longer than the {settings.max_duration_s / 60:.0f}-minute limit.",
        )
    if seg.max_dBFS < settings.silence_dbfs:
        raise AudioError("silent", "The audio is silent (no sound above "
                                   f"{settings.silence_dbfs:.0f} dBFS).")
    if settings.trim_silence:
        seg = _trim(seg, min(settings.silence_dbfs, seg.max_dBFS - TRIM_BELOW_PEAK_DB))
    if len(seg) / 1000 < settings.min_duration_s:
        raise AudioError("empty", "The audio is too short to broadcast.")
    speech = _loudnorm(seg, settings)
    out = speech
    if settings.chime_before:
        out = chime(WORK_RATE, settings.target_lufs) + AudioSegment.silent(400, WORK_RATE) + out
    if settings.chime_after:
        out = out + AudioSegment.silent(400, WORK_RATE) + chime(WORK_RATE, settings.target_lufs)
    enc_args, container, mime = CODECS[settings.codec]
    rate = settings.sample_rate if settings.codec != "opus" else 48_000
    try:
        data, _ = run_ffmpeg(
            ["-f", "s16le", "-ar", str(WORK_RATE), "-ac", "1", "-i", "pipe:0",
             "-ar", str(rate), "-b:a", settings.bitrate, "-map_metadata", "-1",
             "-fflags", "+bitexact", "-flags:a", "+bitexact", *enc_args, "pipe:1"],
            stdin=out.raw_data,
        )
    except subprocess.CalledProcessError as exc:
        raise AudioError("encoder", f"encoding failed: {exc.stderr[-200:]}") from None
    return PreparedAudio(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        duration_ms=len(out),
        codec=settings.codec,
        container=container,
        mime=mime,
        source_format=source_format,
        meta={"target_lufs": settings.target_lufs, "bitrate": settings.bitrate},
    )


def _trim(seg: AudioSegment, silence_dbfs: float) -> AudioSegment:
    """Cut leading and trailing silence, keeping 150 ms at each end. The threshold is
    relative to the recording's own peak (see ``TRIM_BELOW_PEAK_DB``), so the soft end of a
    quiet recording's last word is kept: it is brought up with the rest by normalisation."""
    keep = 150  # ms of silence kept at each end
    lead = detect_leading_silence(seg, silence_threshold=silence_dbfs, chunk_size=10)
    tail = detect_leading_silence(seg.reverse(), silence_threshold=silence_dbfs, chunk_size=10)
    start = max(0, lead - keep)
    end = min(len(seg), len(seg) - tail + keep)
    return seg[start:end] if end > start else seg


def measure_loudness(pcm: bytes, rate: int = WORK_RATE) -> dict[str, float]:
    """EBU R128 measurement of mono s16le PCM (ffmpeg loudnorm, print_format=json)."""
    _, err = run_ffmpeg(
        ["-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0",
         "-af", "loudnorm=print_format=json", "-f", "null", "-"],
        stdin=pcm, loglevel="info",
    )
    blob = err[err.rindex("{"): err.rindex("}") + 1]
    return {k: float(v) for k, v in json.loads(blob).items() if _is_number(v)}


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _pcm_filter(pcm: bytes, chain: str) -> bytes:
    out, _ = run_ffmpeg(
        ["-f", "s16le", "-ar", str(WORK_RATE), "-ac", "1", "-i", "pipe:0", "-af", chain,
         "-ac", "1", "-ar", str(WORK_RATE), "-f", "s16le", "pipe:1"],
        stdin=pcm,
    )
    return out


def _r128(pcm: bytes) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) of mono s16le PCM at WORK_RATE, by
    ffmpeg's ``ebur128`` meter (BS.1770 with a 4x oversampled true peak). The same figures
    as ``loudnorm``'s measuring pass at a sixth of its time: ``loudnorm`` resamples
    everything to 192 kHz first (2 s for a 2.5-minute bulletin here; this takes 0.3 s)."""
    _, err = run_ffmpeg(
        ["-f", "s16le", "-ar", str(WORK_RATE), "-ac", "1", "-i", "pipe:0",
         "-af", "ebur128=peak=true:framelog=quiet", "-f", "null", "-"],
        stdin=pcm, loglevel="info",
    )
    summary = err[err.rindex("Summary:"):]
    integrated = float(_R128_I.search(summary).group(1))  # type: ignore[union-attr]
    peak = float(_R128_PEAK.search(summary).group(1))  # type: ignore[union-attr]
    return integrated, peak


_R128_I = re.compile(r"I:\s+(-?[\d.]+|-inf|nan) LUFS")
_R128_PEAK = re.compile(r"Peak:\s+(-?[\d.]+|-inf|nan) dBFS")


def _loudnorm(seg: AudioSegment, s: AudioSettings) -> AudioSegment:
    """EBU R128 by a linear gain (no pumping): measure, then bring the programme to the
    target, never past the true-peak ceiling.

    Speech (TTS especially) often has peaks too high for the gain it needs; a brick-wall
    limiter then brings those peaks down first (and the result is measured again), so the
    linear gain reaches the target instead of stopping short at the ceiling."""
    integrated, peak = _r128(seg.raw_data)
    if not math.isfinite(integrated):
        # under 400 ms of sound (a one-syllable TTS text): R128's gate has no block to
        # measure, so no gain can be told. Bring the peak to the ceiling instead.
        return seg.apply_gain(s.true_peak_db - seg.max_dBFS)
    gain = s.target_lufs - integrated
    if peak + gain > s.true_peak_db:
        limit_db = max(-24.0, s.true_peak_db - gain - 1.5)
        limited = _pcm_filter(seg.raw_data, f"alimiter=limit={10 ** (limit_db / 20):.5f}:"
                                            "attack=2:release=50:level=0")
        seg = AudioSegment(data=limited, sample_width=2, frame_rate=WORK_RATE, channels=1)
        integrated, peak = _r128(limited)
        gain = s.target_lufs - integrated
    return seg.apply_gain(min(gain, s.true_peak_db - peak))
