"""Audio pipeline: decode what officers have, normalise loudness, add chimes, encode, chunk;
and Vietnamese text-to-speech. Imports nothing else of Loa's."""

from audio.errors import AudioError
from audio.pipeline import AudioSettings, PreparedAudio, decode, prepare_file, prepare_segment
from audio.tts import EspeakNg, TTSEngine, TTSError

__all__ = [
    "AudioError",
    "AudioSettings",
    "EspeakNg",
    "PreparedAudio",
    "TTSEngine",
    "TTSError",
    "decode",
    "prepare_file",
    "prepare_segment",
]
