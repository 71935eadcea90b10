from __future__ import annotations

import hashlib

import pytest

from audio import AudioError, AudioSettings, prepare_file
from audio.pipeline import decode, measure_loudness
from tests.audio.conftest import FORMATS, encoded

NO_CHIME = AudioSettings(chime_before=False, chime_after=False)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_accepted_format_becomes_normalised_mono_opus(fmt: str) -> None:
    p = prepare_file(encoded(fmt), NO_CHIME)
    assert p.codec == "opus" and p.container == "ogg" and p.data.startswith(b"OggS")
    assert p.sha256 == hashlib.sha256(p.data).hexdigest()
    assert 2700 <= p.duration_ms <= 3300  # 3 s, a little trimmed
    seg, sniffed = decode(p.data)
    assert sniffed == "ogg" and seg.channels == 1
    loud = measure_loudness(seg.raw_data)
    assert abs(loud["input_i"] - NO_CHIME.target_lufs) <= 1.5, loud


def test_quiet_and_loud_inputs_come_out_equally_loud() -> None:
    quiet = prepare_file(encoded("wav", 3.0, 0.1), NO_CHIME)
    loud = prepare_file(encoded("wav", 3.0, 7.0), NO_CHIME)
    li = measure_loudness(decode(quiet.data)[0].raw_data)["input_i"]
    lo = measure_loudness(decode(loud.data)[0].raw_data)["input_i"]
    assert abs(li - lo) <= 1.0


def test_chimes_lengthen_the_announcement() -> None:
    plain = prepare_file(encoded("wav"), NO_CHIME)
    chimed = prepare_file(encoded("wav"), AudioSettings(chime_before=True, chime_after=True))
    assert chimed.duration_ms - plain.duration_ms >= 2 * 1150


def test_same_input_gives_same_content_address() -> None:
    assert prepare_file(encoded("mp3"), NO_CHIME).sha256 == prepare_file(encoded("mp3"), NO_CHIME).sha256


@pytest.mark.parametrize("codec,magic", [("mp3", b""), ("pcm_s16le", b"RIFF")])
def test_transport_codec_is_configurable(codec: str, magic: bytes) -> None:
    p = prepare_file(encoded("wav"), AudioSettings(codec=codec, chime_before=False))
    assert p.codec == codec and p.data.startswith(magic)


def err(data: bytes, settings: AudioSettings = NO_CHIME) -> AudioError:
    with pytest.raises(AudioError) as exc:
        prepare_file(data, settings)
    return exc.value


def test_text_file_is_not_audio() -> None:
    e = err("Thông báo họp thôn lúc 8 giờ\n".encode())
    assert e.code == "not_audio" and "text file" in e.message


def test_pdf_is_not_audio() -> None:
    assert err(b"%PDF-1.7\n...").code == "not_audio"


def test_empty_file() -> None:
    assert err(b"").code == "empty"


def test_truncated_audio_is_corrupt() -> None:
    data = encoded("ogg")
    assert err(data[:40] + b"\x00" * 200).code in ("corrupt", "empty")


def test_silence_is_refused() -> None:
    silent = encoded("wav", 2.0, 0.0)
    assert err(silent).code == "silent"


def test_too_long() -> None:
    e = err(encoded("wav", 3.0), AudioSettings(max_duration_s=2.0, chime_before=False))
    assert e.code == "too_long"


def test_too_large() -> None:
    e = err(encoded("wav"), AudioSettings(max_input_bytes=1000))
    assert e.code == "too_large"


def test_a_very_quiet_upload_keeps_its_soft_last_word() -> None:
    """Speech recorded far from the phone (about -56 LUFS): its fading last syllable lies
    below -50 dBFS, but it is speech, and normalisation brings it up with the rest."""
    from pydub import AudioSegment
    from pydub.generators import Sine

    tone = Sine(300, sample_rate=48_000)
    word = sum((tone.to_audio_segment(duration=30, volume=-42.0)
                + tone.to_audio_segment(duration=70, volume=-62.0) for _ in range(10)),
               AudioSegment.empty())  # syllables: short peaks, quiet between
    fading = tone.to_audio_segment(duration=600, volume=-64.0)
    silence = AudioSegment.silent(1000, 48_000)
    seg = (silence + word + fading + silence).set_channels(1)
    loudness = measure_loudness(seg.raw_data)["input_i"]
    assert -60 < loudness < -52, loudness
    with seg.export(format="wav") as wav:
        p = prepare_file(wav.read(), NO_CHIME)
    assert p.duration_ms >= 1600 + 2 * 140  # the word, its fading end, 150 ms either side
    assert p.duration_ms <= 1600 + 2 * 160 + 50  # the silence around it is still cut


def _wav(rate: int, frames: int) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x20" * frames)
    return buf.getvalue()


def test_a_file_that_would_cost_hours_to_decode_is_refused_from_its_header() -> None:
    """4 KB of WAV at 1 Hz: 33 minutes of 'audio', 380 MB once resampled (minutes of CPU).
    Refused by what its header says, before any decoding."""
    with pytest.raises(AudioError) as exc:
        prepare_file(_wav(1, 2000))
    assert exc.value.code == "sample_rate"
    with pytest.raises(AudioError) as exc:  # 46 minutes at 8 kHz: over the 45-minute limit
        prepare_file(_wav(8000, 8000 * 60 * 46))
    assert exc.value.code == "too_long"
