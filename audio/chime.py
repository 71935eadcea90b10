"""The announcement chime (a two-tone "ding-dong"), synthesised, so no asset file is needed."""

from __future__ import annotations

import functools
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment
    from pydub.generators import Sine

__all__ = ["chime"]


@functools.cache
def chime(rate: int = 48_000, level_lufs: float = -16.0) -> AudioSegment:
    # as loud as the programme: a sine peaking at P dBFS measures about P - 3.2 LUFS, and
    # the fades take off a little more
    gain = level_lufs + 4.0
    ding = Sine(784, sample_rate=rate).to_audio_segment(duration=450, volume=gain)
    dong = Sine(622, sample_rate=rate).to_audio_segment(duration=700, volume=gain)
    tone = ding.fade_in(10).fade_out(300) + dong.fade_in(10).fade_out(500)
    return tone.set_channels(1).set_sample_width(2)
