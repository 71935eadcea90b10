"""What a board must not forget across a reboot (protocol §5.2, §5.4): the command ids it
accepted, until each expires (so a captured command cannot be replayed after a reboot), and
the cancels it holds for occurrences it has not received yet.

With a state folder they are kept in ``<state_dir>/<cluster>/replay.jsonl``, an append-only
journal (``{"id": …, "exp": …}`` per accepted command, ``{"cancel": …, "exp": …}`` per
remembered cancel), read back at start without what has expired, and rewritten once it holds
mostly expired lines. Without one, the board cannot remember, so it refuses every command
issued before it started (:meth:`BoardMemory.issued_before_boot`): the controller re-sends
what is still due with new commands, and nothing captured earlier plays.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import TextIO

from devices.messages import iso
from devices.signing import MAX_CLOCK_SKEW, ReplayGuard

log = logging.getLogger(__name__)

__all__ = ["BoardMemory"]

COMPACT_AFTER = 2048


class BoardMemory:
    def __init__(self, folder: Path | None, now: datetime):
        self.booted_at = now
        self.path = folder / "replay.jsonl" if folder is not None else None
        self.cancels: dict[str, datetime] = {}
        entries: dict[str, datetime] = {}
        self._lines = 0
        self._f: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            entries = self._load(now)
            self._rewrite(entries)
        self.guard = ReplayGuard(entries.items())

    @property
    def durable(self) -> bool:
        return self.path is not None

    def issued_before_boot(self, issued_at: datetime) -> bool:
        """A board that keeps no replay window refuses what was issued before it started
        (allowing for clock skew): it cannot know whether it has seen it."""
        return not self.durable and issued_at < self.booted_at - MAX_CLOCK_SKEW

    def accepted(self, command_id: str, expires_at: datetime) -> None:
        self._append({"id": command_id, "exp": iso(expires_at)})

    def cancel(self, occurrence_id: str, expires_at: datetime) -> None:
        self.cancels[occurrence_id] = expires_at
        while len(self.cancels) > 1024:
            self.cancels.pop(next(iter(self.cancels)))
        self._append({"cancel": occurrence_id, "exp": iso(expires_at)})

    def _load(self, now: datetime) -> dict[str, datetime]:
        assert self.path is not None
        entries: dict[str, datetime] = {}
        if not self.path.exists():
            return entries
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
                exp = datetime.fromisoformat(rec["exp"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by a crash
            if exp <= now:
                continue
            if "id" in rec:
                entries[str(rec["id"])] = exp
            elif "cancel" in rec:
                self.cancels[str(rec["cancel"])] = exp
        return entries

    def _rewrite(self, entries: dict[str, datetime]) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for cid, exp in entries.items():
                f.write(json.dumps({"id": cid, "exp": iso(exp)}) + "\n")
            for occ, exp in self.cancels.items():
                f.write(json.dumps({"cancel": occ, "exp": iso(exp)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self._f is not None:
            self._f.close()
        self._f = self.path.open("a")
        self._lines = len(entries) + len(self.cancels)

    def _append(self, rec: dict[str, str]) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()  # to the kernel at each line (a real board writes its flash)
        self._lines += 1
        if self._lines > COMPACT_AFTER and self._lines > 2 * (len(self.guard) + len(self.cancels)):
            now = datetime.now(tz=self.booted_at.tzinfo)
            self.guard.prune(now)
            self._rewrite(dict(self.guard.entries()))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
