"""Serves content chunks on ``loa/v1/content/{sha256}/{index}``.

Requests from many clusters for the same content within a short window are merged, so each
chunk is published once however many clusters asked (they all subscribe to the same topics).
Content already in a cluster's cache is never requested, so it is never sent again.

For an emergency the controller does not wait to be asked: :meth:`push` publishes the chunks
*retained* just before the command, so a cluster that subscribes on receiving the command
gets them from the broker at once, with no request round trip. They are cleared (empty
retained payloads) once the emergency is over. Right after the command, :meth:`push_to_areas`
also publishes them on the content topic of each area the command went to, to which every
cluster beneath is subscribed already: most clusters then need no subscription at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from devices import topics

log = logging.getLogger(__name__)

__all__ = ["ContentServer"]


class ContentServer:
    def __init__(self, publish: Callable[..., bool],
                 load: Callable[[str], bytes | None], chunk_size: int,
                 window_s: float = 0.15, cache_items: int = 32):
        self._publish = publish
        self._load = load
        self.chunk_size = chunk_size
        self.window_s = window_s
        self._pending: dict[str, set[int] | None] = {}
        self._first_request: dict[str, float] = {}
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_items = cache_items
        self._lock = threading.Lock()
        self.chunks_sent = 0
        #: sha -> (chunk count, monotonic time the retained chunks are cleared)
        self._retained: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Flush on a clock of its own (twice per merge window): requests served as they
        arrive are answered within the window, whatever the ingest thread is doing."""
        def run() -> None:
            while not self._stop.wait(self.window_s / 2):
                try:
                    self.flush()
                except Exception:  # (a publish that failed: asked again by the boards)
                    log.exception("content flush failed")

        self._thread = threading.Thread(target=run, name="loa-content", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def chunk_count(self, size: int) -> int:
        return max(1, -(-size // self.chunk_size))

    def _chunk(self, data: bytes, index: int) -> bytes:
        return data[index * self.chunk_size:(index + 1) * self.chunk_size]

    def push(self, sha: str, keep_s: float) -> int:
        """Publish every chunk of ``sha`` retained, for ``keep_s`` seconds."""
        data = self._get(sha)
        if data is None:
            log.warning("content %s pushed but not stored", sha[:12])
            return 0
        n = self.chunk_count(len(data))
        sent = sum(self._publish(topics.content_chunk(sha, i), self._chunk(data, i), 1, True)
                   for i in range(n))
        with self._lock:
            old = self._retained.get(sha, (n, 0.0))[1]
            self._retained[sha] = (n, max(old, time.monotonic() + keep_s))
        self.chunks_sent += sent
        return sent

    def push_to_areas(self, sha: str, area_ids: tuple[str, ...] | list[str]) -> int:
        """Publish every chunk of ``sha`` once on each area's content topic (not retained:
        a cluster that misses it fetches from the retained copy)."""
        data = self._get(sha) if area_ids else None
        if data is None:
            return 0
        n = self.chunk_count(len(data))
        sent = sum(self._publish(topics.area_content_chunk(a, sha, i), self._chunk(data, i), 1,
                                 False)
                   for a in area_ids for i in range(n))
        self.chunks_sent += sent
        return sent

    def request(self, sha: str, missing: list[int] | None) -> None:
        with self._lock:
            if missing is None and sha in self._retained:
                return  # the broker already hands every subscriber the retained chunks
            cur = self._pending.get(sha, set())
            if sha not in self._pending:
                self._first_request[sha] = time.monotonic()
            if missing is None or cur is None:
                self._pending[sha] = None  # everything
            else:
                cur.update(missing)
                self._pending[sha] = cur

    def flush(self, force: bool = False) -> int:
        """Publish chunks for requests older than the merge window; returns chunks sent.
        Clears retained chunks whose time is up."""
        now = time.monotonic()
        with self._lock:
            expired = [(s, n) for s, (n, until) in self._retained.items() if now >= until]
            for s, _ in expired:
                del self._retained[s]
        for sha, n in expired:
            for i in range(n):
                self._publish(topics.content_chunk(sha, i), b"", 1, True)
        with self._lock:
            due = [s for s, t in self._first_request.items()
                   if force or now - t >= self.window_s]
            work = [(s, self._pending.pop(s)) for s in due]
            for s in due:
                del self._first_request[s]
        sent = 0
        for sha, indices in work:
            data = self._get(sha)
            if data is None:
                log.warning("content %s requested but not stored", sha[:12])
                continue
            n = self.chunk_count(len(data))
            wanted = range(n) if indices is None else sorted(i for i in indices if 0 <= i < n)
            for i in wanted:
                if self._publish(topics.content_chunk(sha, i), self._chunk(data, i), 1):
                    sent += 1
        self.chunks_sent += sent
        return sent

    def _get(self, sha: str) -> bytes | None:
        with self._lock:
            if sha in self._cache:
                self._cache.move_to_end(sha)
                return self._cache[sha]
        data = self._load(sha)
        if data is not None:
            with self._lock:
                self._cache[sha] = data
                while len(self._cache) > self._cache_items:
                    self._cache.popitem(last=False)
        return data
