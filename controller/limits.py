"""Rate limits: a token bucket per key, in memory (one controller process).

Used for each board's content requests (controller.ingest) and each account's audio work
(uploads and text-to-speech, controller.api.routes.contents), so that no single board or
account can make the controller do unbounded work.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

__all__ = ["RateLimit"]


class RateLimit:
    """A token bucket per key (a board, an account)."""

    def __init__(self, burst: int = 20, rate_per_s: float = 2.0):
        self.burst, self.rate = burst, rate_per_s
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()

    def allow(self, key: str) -> bool:
        return self.wait_s(key) == 0.0

    def wait_s(self, key: str) -> float:
        """0 and one token taken, or how long until the next token."""
        t = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, t)
                self.dropped[key] += 1
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, t)
            if len(self._buckets) > 100_000:  # (a flood of keys: forget the oldest)
                self._buckets.pop(next(iter(self._buckets)))
            return 0.0
