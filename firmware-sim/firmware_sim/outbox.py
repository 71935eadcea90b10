"""A board's outbox: the events it has to report (deliveries, acks, refusals, content
requests), kept in order until the broker has acknowledged each one, across lost links and,
with a state folder, across reboots.

On disk it is an append-only journal, ``<state_dir>/<cluster>/outbox.jsonl``: a line per
event queued (``{"n": k, "t": topic, "p": base64 payload, "q": qos}``) and a line per event
acknowledged (``{"done": k}``), flushed to the kernel at each line (a real board would
write flash); rewritten with only what is still queued once enough is done. A line cut
short by a crash is ignored: the event it held had not been handed to the link yet.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import deque
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

__all__ = ["Outbox"]

#: rewrite the journal once this many acknowledged lines are in it
COMPACT_AFTER = 512


class Outbox:
    def __init__(self, folder: Path | None = None, maxlen: int = 10_000):
        self._q: deque[tuple[int, str, bytes, int]] = deque()
        self.maxlen = maxlen
        self._next = 0
        self._done_lines = 0
        self.dropped = 0
        self.path = folder / "outbox.jsonl" if folder is not None else None
        self._f: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._rewrite()

    def __len__(self) -> int:
        return len(self._q)

    def __bool__(self) -> bool:
        return bool(self._q)

    def append(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if len(self._q) >= self.maxlen:  # full: the oldest goes (counted)
            n = self._q.popleft()[0]
            self.dropped += 1
            self._write({"done": n})
        n = self._next
        self._next += 1
        self._q.append((n, topic, payload, qos))
        self._write({"n": n, "t": topic, "p": base64.b64encode(payload).decode(), "q": qos})

    def first(self) -> tuple[str, bytes, int]:
        _, topic, payload, qos = self._q[0]
        return topic, payload, qos

    def pop(self) -> None:
        """The first event is acknowledged by the broker: it leaves the outbox."""
        n = self._q.popleft()[0]
        self._write({"done": n})
        self._done_lines += 1
        if self._done_lines >= COMPACT_AFTER and len(self._q) < COMPACT_AFTER:
            self._rewrite()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    # --- the journal -----------------------------------------------------------------------

    def _write(self, entry: dict[str, object]) -> None:
        if self._f is None:
            return
        try:
            self._f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._f.flush()
        except OSError as exc:
            log.warning("outbox journal %s not written (%s)", self.path, exc)

    def _load(self) -> None:
        assert self.path is not None
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        queued: dict[int, tuple[int, str, bytes, int]] = {}
        for line in lines:
            try:
                e = json.loads(line)
                if "done" in e:
                    queued.pop(int(e["done"]), None)
                else:
                    n = int(e["n"])
                    queued[n] = (n, e["t"], base64.b64decode(e["p"]), int(e["q"]))
            except (ValueError, KeyError, TypeError):
                continue  # cut short by the crash
        self._q.extend(queued[k] for k in sorted(queued))
        self._next = max(queued, default=-1) + 1
        if self._q:
            log.info("outbox %s: %d event(s) kept across the reboot", self.path, len(self._q))

    def _rewrite(self) -> None:
        assert self.path is not None
        self.close()
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for n, topic, payload, qos in self._q:
                f.write(json.dumps({"n": n, "t": topic, "p": base64.b64encode(payload).decode(),
                                    "q": qos}, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._done_lines = 0
        self._f = self.path.open("a")
