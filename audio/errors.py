"""Errors of the audio package.

``AudioError`` carries a stable ``code`` (for APIs and tests) and a message written for the
officer who uploaded the file:

- ``empty``: the file has no bytes or no audio samples
- ``too_large``: more bytes than the configured limit
- ``not_audio``: the bytes are not an audio format we accept (text, image, document ...)
- ``corrupt``: looks like audio but cannot be decoded
- ``silent``: decodes, but is silence
- ``too_long``: longer than the configured maximum duration
- ``encoder``: our own encoder failed (a server fault, not the user's)
- ``tts``: text-to-speech input or engine problem
"""

from __future__ import annotations

__all__ = ["AudioError"]


class AudioError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
