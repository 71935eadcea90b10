"""Signs that someone is tampering with a board, and limits on what one board may ask.

* **Refusal storms.** A board that refuses many commands in a short time is being sent
  commands it cannot accept: forged (``bad_signature``, ``unknown_key``), replayed
  (``replayed``), re-published elsewhere (``wrong_topic``). :class:`RefusalWatch` opens a
  ``possible_tampering`` alert on the board naming the reasons, and clears it once it has
  been quiet for the window.
* **Content requests.** Each request makes the controller publish chunks; a board that
  asks again and again (a bug, or someone with its credential) would make the controller
  amplify it. :class:`controller.limits.RateLimit` lets each board make ``burst``
  requests at once and ``rate_per_s`` after that; the rest are dropped and counted.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from datetime import datetime

from sqlalchemy.orm import Session

from controller.fleet.alerts import AlertManager

__all__ = ["CODE", "RefusalWatch"]

CODE = "possible_tampering"


class RefusalWatch:
    def __init__(self, alerts: AlertManager, threshold: int = 5, window_s: float = 60.0,
                 hold_s: int = 600):
        self.alerts, self.threshold, self.window_s, self.hold_s = alerts, threshold, window_s, hold_s
        self._seen: dict[str, deque[tuple[float, str]]] = {}
        self._alerting: set[str] = set()

    def note(self, db: Session, cluster_id: str, reason: str, now: datetime) -> None:
        t = time.monotonic()
        seen = self._seen.setdefault(cluster_id, deque())
        seen.append((t, reason))
        self._expire(seen, t)
        if len(seen) >= self.threshold:
            reasons = Counter(r for _t, r in seen)
            said = ", ".join(f"{r} ×{n}" for r, n in reasons.most_common())
            self.alerts.sync(db, cluster_id=cluster_id, area_id=None, conditions={
                (CODE, ""): f"{cluster_id} refused {len(seen)} commands in "
                            f"{self.window_s:.0f} s ({said}): possible tampering"},
                now=now, hold_s=self.hold_s, codes=[CODE])
            self._alerting.add(cluster_id)

    def sweep(self, db: Session, now: datetime) -> None:
        """Clear the alert of a board that has been quiet for the window."""
        t = time.monotonic()
        for cid in list(self._alerting):
            seen = self._seen.get(cid, deque())
            self._expire(seen, t)
            if not seen:
                self.alerts.sync(db, cluster_id=cid, area_id=None, conditions={}, now=now,
                                 hold_s=self.hold_s, codes=[CODE])
                self._alerting.discard(cid)
                self._seen.pop(cid, None)

    def _expire(self, seen: deque[tuple[float, str]], t: float) -> None:
        while seen and t - seen[0][0] > self.window_s:
            seen.popleft()
