"""Locating and running ffmpeg.

One ffmpeg everywhere: the binary shipped in the ``imageio-ffmpeg`` wheel, which the
project's install brings, so the same upload is decoded and encoded the same way on every
machine (a system ffmpeg's build may lack encoders, e.g. Debian's has no AMR-NB).
``LOA_FFMPEG`` (a path) overrides it on purpose; an ``ffmpeg`` on PATH is never picked up.
"""

from __future__ import annotations

import functools
import os
import subprocess

from audio.errors import AudioError

__all__ = ["ffmpeg_path", "run_ffmpeg"]


@functools.cache
def ffmpeg_path() -> str:
    explicit = os.environ.get("LOA_FFMPEG")
    if explicit:
        return explicit
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:  # pragma: no cover - install problem
        raise AudioError("encoder", f"ffmpeg not found: {exc}") from exc


def run_ffmpeg(
    args: list[str], stdin: bytes | None = None, timeout: float = 120, loglevel: str = "error"
) -> tuple[bytes, str]:
    """Run ffmpeg; returns (stdout, stderr). Raises subprocess.CalledProcessError on failure."""
    cmd = [ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args]
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, timeout=timeout, check=False,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, err)
    return proc.stdout, err
