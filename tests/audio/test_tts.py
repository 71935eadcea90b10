from __future__ import annotations

import pytest

from audio import AudioSettings, EspeakNg, TTSError, prepare_segment
from audio.pipeline import decode, measure_loudness

TEXT = ("Ủy ban nhân dân xã Hướng Đạo thông báo: sáng thứ bảy tuần này, trạm y tế xã "
        "tổ chức tiêm chủng cho trẻ em dưới năm tuổi.")


def test_vietnamese_text_is_spoken() -> None:
    seg = EspeakNg().synthesize(TEXT)
    assert 4_000 < len(seg) < 20_000  # a sentence, in milliseconds
    assert seg.dBFS > -40  # sound, not silence


def test_speed_changes_duration() -> None:
    tts = EspeakNg()
    slow, fast = tts.synthesize(TEXT, speed=0.7), tts.synthesize(TEXT, speed=1.5)
    assert len(fast) < 0.75 * len(slow)


@pytest.mark.parametrize("chimes", [False, True])
def test_tts_comes_out_at_the_loudness_target_with_headroom(chimes: bool) -> None:
    settings = AudioSettings(chime_before=chimes, chime_after=chimes)
    p = prepare_segment(EspeakNg().synthesize(TEXT), settings)
    loud = measure_loudness(decode(p.data)[0].raw_data)
    assert abs(loud["input_i"] - settings.target_lufs) <= 1.0, loud
    assert loud["input_tp"] <= -1.0, loud  # after Opus, still below -1 dBTP


@pytest.mark.parametrize("text", ["", "   \n\t", "\x00\x01"])
def test_empty_text_is_refused(text: str) -> None:
    with pytest.raises(TTSError):
        EspeakNg().synthesize(text)


def test_unknown_voice_and_speed_are_refused() -> None:
    with pytest.raises(TTSError):
        EspeakNg().synthesize("xin chào", voice="klingon")
    with pytest.raises(TTSError):
        EspeakNg().synthesize("xin chào", speed=9)


def test_a_word_too_short_for_r128_gating_is_still_prepared() -> None:
    """Under 400 ms of sound gives loudnorm no block to measure (integrated loudness
    -inf); found by fuzzing the API, where it was a 500. It plays, peaking at the ceiling."""
    settings = AudioSettings(chime_before=False, chime_after=False)
    p = prepare_segment(EspeakNg().synthesize(",\x1f\x9fuP", speed=1.44), settings)
    seg = decode(p.data)[0]
    assert len(seg) > 100
    assert settings.true_peak_db - 3.0 <= seg.max_dBFS <= settings.true_peak_db + 0.5
