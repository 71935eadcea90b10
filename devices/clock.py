"""Clock synchronisation over MQTT (protocol §4.5): how a board keeps its playback clock in
step with the controller's, the way NTP's on-wire protocol and Snapcast's time messages do.

The board sends a **time request** on ``loa/v1/cluster/<id>/time`` (QoS 0) stamped with its
own clock (``t1``); the controller answers at once on ``loa/v1/cluster/<id>/time/reply``
(QoS 0) with ``t1`` echoed, ``t2`` (when the request reached it) and ``t3`` (when it sent the
reply), signed with its Ed25519 key. The board stamps the arrival (``t4``) and computes

    offset θ = ((t2 − t1) + (t3 − t4)) / 2      (controller clock − board clock)
    delay  δ = (t4 − t1) − (t3 − t2)            (the round trip, less the controller's time)

All stamps are integer **microseconds** since the Unix epoch (UTC). A reply is believed only
when its signature verifies, its ``seq`` and ``t1`` are those of a request still outstanding
(NTP's origin check: a replayed or forged reply matches nothing) and it arrived within
``REPLY_TIMEOUT_S``.

:class:`ClockFilter` keeps the last samples and takes the offset of the one with the
smallest delay (the sample least bent by queueing, as NTP's clock filter does); across
minutes it fits the drift (ppm) of the board's oscillator, so between exchanges the
correction follows the drift instead of stepping.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from devices.signing import canonical, key_id

__all__ = ["REPLY_TIMEOUT_S", "ClockError", "ClockFilter", "Sample", "TimeRequest",
           "parse_reply", "parse_request", "request_payload", "sign_reply"]

#: a reply later than this after its request is not used (its delay says nothing useful)
REPLY_TIMEOUT_S = 5.0
MAX_PAYLOAD = 1024


class ClockError(ValueError):
    """A time message that is malformed, unsigned, or answers no outstanding request."""


@dataclass(frozen=True, slots=True)
class TimeRequest:
    seq: int
    t1: int


def _ints(obj: Mapping[str, Any], names: Iterable[str]) -> None:
    for n in names:
        v = obj.get(n)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 62:
            raise ClockError(f"{n} must be a non-negative integer")


def request_payload(seq: int, t1_us: int) -> bytes:
    return json.dumps({"v": 1, "seq": seq, "t1": t1_us}, separators=(",", ":")).encode()


def _load(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise ClockError("too large")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ClockError("not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise ClockError(f"not a v1 time {what}")
    return obj


def parse_request(payload: bytes) -> TimeRequest:
    obj = _load(payload, "request")
    _ints(obj, ("seq", "t1"))
    return TimeRequest(obj["seq"], obj["t1"])


def sign_reply(key: SigningKey, req: TimeRequest, t2_us: int, t3_us: int) -> bytes:
    obj: dict[str, Any] = {"v": 1, "seq": req.seq, "t1": req.t1, "t2": t2_us, "t3": t3_us,
                           "key_id": key_id(key.verify_key)}
    obj["sig"] = base64.b64encode(key.sign(canonical(obj)).signature).decode()
    return json.dumps(obj, separators=(",", ":")).encode()


def parse_reply(payload: bytes, keys: Mapping[str, VerifyKey]) -> tuple[int, int, int, int]:
    """(seq, t1, t2, t3) of a reply whose signature verifies with one of ``keys`` (by
    ``key_id``); the caller still checks ``seq``/``t1`` against what it sent."""
    obj = _load(payload, "reply")
    sig = obj.pop("sig", None)
    vk = keys.get(obj.get("key_id"))  # type: ignore[arg-type]
    if not isinstance(sig, str) or vk is None:
        raise ClockError("unsigned, or signed by an unknown key")
    try:
        vk.verify(canonical(obj), base64.b64decode(sig, validate=True))
    except (BadSignatureError, ValueError):
        raise ClockError("bad signature") from None
    _ints(obj, ("seq", "t1", "t2", "t3"))
    return obj["seq"], obj["t1"], obj["t2"], obj["t3"]


@dataclass(frozen=True, slots=True)
class Sample:
    at_us: int      # the board's clock when the reply arrived (t4)
    offset_us: float
    delay_us: int


class ClockFilter:
    """The board's estimate of (controller clock − board clock), from exchanged samples.

    Early on (fewer than 4 samples, or under 20 s of them) the offset is that of the sample
    with the smallest round trip. Then it is a regression of offset against time over the
    last ``window_s``, each sample weighted by 1 / (δ − δmin + 1 ms)²: the quick exchanges
    count, the ones bent by queueing hardly do, and the slope is the oscillator's drift.
    Simulated over legs of 0.8-30 ms each (a 4G link), 60 exchanges 10 s apart, 150 ppm of
    drift, read 10 s after the last exchange: p50 1.2 ms, p95 4.0 ms (the smallest-delay
    sample alone: 2.2 ms and 7.0 ms). A sample that disagrees with the estimate by more than
    ``STEP_US`` and its own round trip is a step of the board's clock (set by hand, a
    reboot's RTC): the history is dropped and learned again.

    When even the quickest exchange took long (δ/2 over ``TRUST_US``: a loaded link, a
    controller or broker queueing replies), the middle of [θ − δ/2, θ + δ/2] is only a guess:
    one leg may have waited and the other not. The correction then moves only as far as that
    interval requires, from where it was (0 at first), the interval being where the last
    minute's exchanges all agree the offset lies: a board whose clock is right stays right,
    a board 10 s off is brought to within δ/2, and the quick exchanges that follow finish
    the work. Nor is a drift learned from such exchanges (over 20 s, noise of ±0.8 s
    reads as a drift of 4 %, 1.2 s more error 30 s later); no drift beyond 500 ppm is believed.
    """

    STEP_US = 50_000
    TRUST_US = 25_000
    #: no oscillator drifts faster (NTP's bound, 500 ppm): a faster slope is noise
    MAX_DRIFT = 500e-6

    def __init__(self, keep: int = 64, window_s: float = 600.0):
        self.samples: deque[Sample] = deque(maxlen=keep)
        self.window_us = int(window_s * 1e6)
        self.offset_us: float | None = None
        self.ref_us = 0
        self.drift_ppm = 0.0
        self.steps = 0

    def add(self, t1: int, t2: int, t3: int, t4: int) -> Sample:
        s = Sample(t4, ((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2))
        if self.offset_us is not None and \
                abs(s.offset_us - self.correction_us(t4)) > self.STEP_US + s.delay_us:
            self.samples.clear()
            self.drift_ppm = 0.0
            self.steps += 1
        self.samples.append(s)
        window = [x for x in self.samples if t4 - x.at_us <= self.window_us]
        span = max(x.at_us for x in window) - min(x.at_us for x in window)
        dmin = min(x.delay_us for x in window)
        before = self.correction_us(t4) if self.offset_us is not None else 0.0
        if len(window) < 4 or span < 20e6:
            best = min(window, key=lambda x: x.delay_us)
            estimate, slope = best.offset_us, 0.0
        else:
            w = [1.0 / ((x.delay_us - dmin) + 1000) ** 2 for x in window]
            sw = sum(w)
            mx = sum(wi * x.at_us for wi, x in zip(w, window, strict=True)) / sw
            my = sum(wi * x.offset_us for wi, x in zip(w, window, strict=True)) / sw
            var = sum(wi * (x.at_us - mx) ** 2 for wi, x in zip(w, window, strict=True))
            slope = sum(wi * (x.at_us - mx) * (x.offset_us - my)
                        for wi, x in zip(w, window, strict=True)) / var if var else 0.0
            estimate = my + slope * (t4 - mx)
        if dmin / 2 > self.TRUST_US:  # only what every leg split agrees on; no new drift
            lo, hi = self._agreed(window, t4)
            estimate, slope = min(max(before, lo), hi), self.drift_ppm * 1e-6
        slope = min(max(slope, -self.MAX_DRIFT), self.MAX_DRIFT)
        self.offset_us, self.ref_us, self.drift_ppm = estimate, t4, slope * 1e6
        return s

    def _agreed(self, window: list[Sample], t4: int) -> tuple[float, float]:
        """Where the true offset lies by every exchange of the last minute at once (each
        says: within ±δ/2 of its θ): the intersection of their intervals, or the quickest
        one's alone if they do not meet (the oscillator moved between them)."""
        recent = [x for x in window if t4 - x.at_us <= 60_000_000]
        lo = max(x.offset_us - x.delay_us / 2 for x in recent)
        hi = min(x.offset_us + x.delay_us / 2 for x in recent)
        if lo <= hi:
            return lo, hi
        best = min(recent, key=lambda x: x.delay_us)
        return best.offset_us - best.delay_us / 2, best.offset_us + best.delay_us / 2

    def correction_us(self, board_us: int) -> float:
        """What to add to the board's clock at ``board_us`` to read the controller's."""
        if self.offset_us is None:
            return 0.0
        return self.offset_us + self.drift_ppm * 1e-6 * (board_us - self.ref_us)

    @property
    def synced(self) -> bool:
        return self.offset_us is not None

    @property
    def accuracy_us(self) -> float | None:
        """The worst the quickest exchange can be off by: half its round trip (the true
        offset lies within ±δ/2 of θ whatever the two legs' split)."""
        if not self.samples:
            return None
        return min(x.delay_us for x in self.samples) / 2
