"""A CAP ``<resource>``'s audio: inline (``derefUri``) or fetched from its ``<uri>``.

Fetching is bounded: http and https only, hosts from ``LOA_CAP_RESOURCE_HOSTS`` when the
operator lists any (redirects included), at most ``max_bytes`` read whatever the server
claims, a deadline over the whole transfer, and a type that can be audio (``audio/*`` or
``application/octet-stream``; the audio pipeline then sniffs and decodes it). A ``<digest>``
(SHA-1, CAP 1.2 §3.2.3) must match what arrived. Every failure is a :class:`ResourceError`
whose message says why, so the alert can fall back to speech and say so in its Ack.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

from controller.cap.alert import CapResource

__all__ = ["ResourceError", "ResourceLimits", "load_recording"]

AUDIO_TYPES = ("audio/", "application/octet-stream")


class ResourceError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 15.0
    #: hosts a ``<uri>`` may name (lower case); empty: any host
    hosts: tuple[str, ...] = ()


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, limits: ResourceLimits):
        self.limits = limits

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _check_url(newurl, self.limits)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_url(url: str, limits: ResourceLimits) -> None:
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ResourceError(f"only http and https addresses are fetched, not {url[:120]!r}")
    if limits.hosts and u.hostname.lower() not in limits.hosts:
        raise ResourceError(f"host {u.hostname} is not one the controller fetches from "
                            "(LOA_CAP_RESOURCE_HOSTS)")


def _fetch(url: str, limits: ResourceLimits) -> bytes:
    _check_url(url, limits)
    deadline = time.monotonic() + limits.timeout_s
    opener = urllib.request.build_opener(_Redirects(limits))
    req = urllib.request.Request(url, headers={"User-Agent": "loa-controller (CAP resource)"})
    try:
        with opener.open(req, timeout=min(limits.timeout_s, 10.0)) as resp:
            kind = (resp.headers.get_content_type() or "").lower()
            if not kind.startswith(AUDIO_TYPES):
                raise ResourceError(f"the server sent {kind}, not audio")
            claimed = resp.headers.get("Content-Length")
            if claimed and claimed.isdigit() and int(claimed) > limits.max_bytes:
                raise ResourceError(f"{int(claimed)} bytes is over the "
                                    f"{limits.max_bytes} byte limit")
            data = bytearray()
            while chunk := resp.read(64 * 1024):
                data += chunk
                if len(data) > limits.max_bytes:
                    raise ResourceError(f"more than the {limits.max_bytes} byte limit")
                if time.monotonic() > deadline:
                    raise ResourceError(f"not complete within {limits.timeout_s:.0f} s")
            return bytes(data)
    except urllib.error.HTTPError as exc:
        raise ResourceError(f"the server answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ResourceError(f"cannot fetch it ({reason})") from None


def load_recording(res: CapResource, limits: ResourceLimits) -> bytes:
    """The resource's bytes, inline or fetched, checked against its ``<digest>``."""
    if res.data is not None:
        data = res.data
    elif res.uri:
        data = _fetch(res.uri, limits)
    else:
        raise ResourceError("the resource has neither <uri> nor <derefUri>")
    if not data:
        raise ResourceError("the resource is empty")
    if res.digest and hashlib.sha1(data).hexdigest() != res.digest:
        raise ResourceError("its SHA-1 does not match the alert's <digest>")
    return data
