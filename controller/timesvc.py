"""The controller's side of clock synchronisation (protocol §4.5, :mod:`devices.clock`):
every board's time request is answered at once, in the network thread, with the arrival and
departure stamps, signed. Nothing is written anywhere; a board asking faster than
``RATE_PER_MIN`` is not answered (counted), so a flood cannot make the controller sign for
it."""

from __future__ import annotations

import time
from collections import Counter

from nacl.signing import SigningKey

from controller.transport.link import Link
from devices import topics
from devices.clock import ClockError, parse_request, sign_reply

__all__ = ["RATE_PER_MIN", "TimeService"]

#: what a board may ask per minute: a burst of 8 at start, then one exchange every 30-60 s
RATE_PER_MIN = 30
BURST = 12
#: boards tracked for the rate limit at most (a province's fleet and then some)
MAX_TRACKED = 50_000


class TimeService:
    def __init__(self, link: Link, key: SigningKey):
        self.link, self.key = link, key
        self.counters: Counter[str] = Counter()
        self._bucket: dict[str, tuple[float, float]] = {}

    def _allow(self, cluster_id: str, now: float) -> bool:
        if len(self._bucket) > MAX_TRACKED and cluster_id not in self._bucket:
            self._bucket.clear()  # (ids sprayed by a client the broker let through)
        tokens, last = self._bucket.get(cluster_id, (float(BURST), now))
        tokens = min(float(BURST), tokens + (now - last) * RATE_PER_MIN / 60)
        if tokens < 1:
            self._bucket[cluster_id] = (tokens, now)
            return False
        self._bucket[cluster_id] = (tokens - 1, now)
        return True

    def handle(self, topic: str, payload: bytes, arrived_us: int) -> bool:
        """Link.fast: True when ``topic`` is a time request (answered, or dropped and
        counted); False for everything else, which goes to the inbox."""
        if not topic.endswith("/time"):
            return False
        t = topics.parse_cluster_topic(topic)
        if t is None or t.kind != "time":
            return False
        if not self._allow(t.cluster_id, time.monotonic()):
            self.counters["time_limited"] += 1
            return True
        try:
            req = parse_request(payload)
        except ClockError:
            self.counters["time_invalid"] += 1
            return True
        reply = sign_reply(self.key, req, arrived_us, time.time_ns() // 1000)
        self.link.publish(topics.cluster_time_reply(t.cluster_id), reply, qos=0)
        self.counters["time_replies"] += 1
        return True
