"""Text-to-speech behind a small interface; espeak-ng (voice ``vi``) is the built-in engine.

espeak-ng is loaded as a shared library from the ``espeakng-loader`` wheel (library and voice
data included), so a fresh machine needs no system package. A better engine plugs in by
implementing :class:`TTSEngine`.
"""

from __future__ import annotations

import ctypes
import os
import threading
import unicodedata
import warnings
from typing import Protocol

from audio.errors import AudioError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment

__all__ = ["MAX_TEXT_CHARS", "EspeakNg", "TTSEngine", "TTSError"]

MAX_TEXT_CHARS = 10_000


class TTSError(AudioError):
    def __init__(self, message: str):
        super().__init__("tts", message)


class TTSEngine(Protocol):
    name: str

    def voices(self) -> list[str]: ...

    def voice_for(self, language: str) -> str | None:
        """The voice that reads ``language`` (a BCP 47 tag, e.g. ``en-US``), or None."""
        ...

    def synthesize(self, text: str, voice: str = "vi", speed: float = 1.0) -> AudioSegment:
        """Speak ``text``; ``speed`` is a factor of the voice's normal rate (0.5-2.0)."""
        ...


_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1
_CHARS_UTF8 = 1
_BASE_WPM = 150
#: regional voices espeak-ng names by language and region (the rest go by language alone)
_REGIONAL = frozenset({"en-us", "en-gb", "pt-br", "es-419", "fr-be", "fr-ch", "zh-yue"})


def clean_text(text: str) -> str:
    """NFC-normalise and drop control characters; refuse empty or over-long text."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = text.strip()
    if not text:
        raise TTSError("The text is empty.")
    if len(text) > MAX_TEXT_CHARS:
        raise TTSError(f"The text has {len(text)} characters; the limit is {MAX_TEXT_CHARS}.")
    return text


class EspeakNg:
    """espeak-ng through its C API (libespeak-ng), synchronous synthesis into memory."""

    name = "espeak-ng"
    _lock = threading.Lock()  # libespeak-ng has process-global state
    _lib: ctypes.CDLL | None = None
    _rate = 22050
    _langs: set[str] | None = None

    def __init__(self, library: str | None = None, data_path: str | None = None):
        self._library = library
        self._data_path = data_path

    def _load(self) -> ctypes.CDLL:
        if EspeakNg._lib is None:
            lib_path, data = self._library, self._data_path
            if lib_path is None or data is None:
                try:
                    import espeakng_loader
                except ImportError as exc:  # pragma: no cover - install problem
                    raise TTSError(f"espeak-ng is not installed: {exc}") from exc
                lib_path = lib_path or espeakng_loader.get_library_path()
                data = data or espeakng_loader.get_data_path()
            lib = ctypes.CDLL(lib_path)
            lib.espeak_Initialize.restype = ctypes.c_int
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
            if rate <= 0:
                raise TTSError("espeak-ng failed to initialise")
            EspeakNg._rate = rate
            EspeakNg._lib = lib
        return EspeakNg._lib

    def voices(self) -> list[str]:
        """The Vietnamese voices offered to officers (northern, central, southern)."""
        return ["vi", "vi-vn-x-central", "vi-vn-x-south"]

    def _languages(self) -> set[str]:
        """Languages espeak-ng has a dictionary for in its data (``<lang>_dict``)."""
        if EspeakNg._langs is None:
            data = self._data_path
            if data is None:
                try:
                    import espeakng_loader

                    data = espeakng_loader.get_data_path()
                except ImportError:
                    data = None
            names = os.listdir(data) if data and os.path.isdir(data) else []
            EspeakNg._langs = {n[:-5] for n in names if n.endswith("_dict")}
        return EspeakNg._langs

    def voice_for(self, language: str) -> str | None:
        """``vi-VN`` → ``vi``; ``en-US`` → ``en-us`` (espeak-ng's voices are named by
        language, with a few regional variants); None where espeak-ng has no dictionary
        for the language."""
        tag = language.strip().lower().replace("_", "-")
        base = tag.split("-")[0]
        if base == "vi":
            return "vi"
        if base not in self._languages():
            return None
        return tag if tag in _REGIONAL else base

    def synthesize(self, text: str, voice: str = "vi", speed: float = 1.0) -> AudioSegment:
        text = clean_text(text)
        if voice not in self.voices() and voice.split("-")[0] not in self._languages():
            raise TTSError(f"Unknown voice {voice!r}; available: {', '.join(self.voices())}.")
        if not 0.5 <= speed <= 2.0:
            raise TTSError("speed must be between 0.5 and 2.0")
        buf = bytearray()

        def collect(wav: ctypes._Pointer, n: int, _events: int) -> int:  # type: ignore[type-arg]
            if wav and n > 0:
                buf.extend(ctypes.string_at(wav, n * 2))
            return 0

        cb = _SYNTH_CB(collect)
        raw = text.encode("utf-8")
        with EspeakNg._lock:
            lib = self._load()
            lib.espeak_SetSynthCallback(cb)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise TTSError(f"espeak-ng has no voice {voice!r}")
            lib.espeak_SetParameter(_ESPEAK_RATE, int(_BASE_WPM * speed), 0)
            err = lib.espeak_Synth(ctypes.c_char_p(raw), len(raw) + 1, 0, 0, 0, _CHARS_UTF8,
                                   None, None)
            rate = EspeakNg._rate
        if err != 0 or not buf:
            raise TTSError(f"espeak-ng produced no audio (error {err})")
        return AudioSegment(data=bytes(buf), sample_width=2, frame_rate=rate, channels=1)
