"""Airings that went on the wire before their rows were committed: a durable intent.

An immediate emergency publishes its command first and writes its rows after (thousands of
delivery rows must not hold up the sirens), and an airing due while the database refuses
writes (disk full, server down) is sent from memory. Either way what went on the air is
described here first: an *intent* (the broadcast if it is new, the occurrence, its
deliveries) appended to ``<data_dir>/spool/airings.jsonl`` and fsync'd before the publish,
then marked done once the rows are committed. On start, every intent not marked done and
not in the database is written: nothing airs unrecorded, even across a crash between the
publish and the commit. If the spool itself cannot be written (the same full disk), the
intent is kept in memory and recorded as soon as the database takes writes again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, inspect
from sqlalchemy.orm import Session

from controller.broadcasting.states import BroadcastStatus, move
from controller.db.models import Broadcast, Delivery, Occurrence, table_of

log = logging.getLogger(__name__)

__all__ = ["Intent", "Spool", "columns", "record"]

#: {"id", "broadcast": columns or None (it exists), "broadcast_id", "occurrence": columns,
#:  "deliveries": {"state", "error", "updated_at", "clusters": [ids], "offline": [ids]}}
#: (clusters offline when it was sent get the error "cluster offline when sent")
Intent = dict[str, Any]


def columns(obj: object) -> dict[str, Any]:
    """A mapped object's column values that are set (unset ones take their defaults)."""
    out = {}
    for attr in inspect(type(obj)).column_attrs:
        v = getattr(obj, attr.key)
        if v is not None:
            out[attr.key] = v
    return out


def _encode(v: object) -> object:
    if isinstance(v, datetime):
        return {"$dt": v.isoformat()}
    raise TypeError(f"not JSON: {type(v).__name__}")


def _decode(d: dict[str, Any]) -> object:
    if set(d) == {"$dt"}:
        return datetime.fromisoformat(d["$dt"])
    return d


def record(db: Session, intent: Intent) -> bool:
    """Write ``intent``'s rows unless its occurrence is there already; the caller commits.
    Returns True when rows were written."""
    if db.get(Occurrence, intent["id"]) is not None:
        return False
    bc = db.get(Broadcast, intent["broadcast_id"])
    if bc is None:
        if intent["broadcast"] is None:
            log.error("airing %s: its broadcast %s is gone; not recorded", intent["id"],
                      intent["broadcast_id"])
            return False
        db.add(Broadcast(**intent["broadcast"]))
    elif bc.status == BroadcastStatus.SCHEDULED:
        move(bc, BroadcastStatus.ACTIVE)
    db.add(Occurrence(**intent["occurrence"]))
    db.flush()
    d = intent["deliveries"]
    offline = set(d["offline"])
    if d["clusters"]:
        db.execute(insert(table_of(Delivery)), [
            {"occurrence_id": intent["id"], "cluster_id": c, "state": d["state"],
             "updated_at": d["updated_at"],
             "error": "cluster offline when sent" if c in offline else d["error"]}
            for c in d["clusters"]])
    return True


class Spool:
    def __init__(self, folder: Path):
        self.path = folder / "airings.jsonl"
        self._lock = threading.Lock()
        self._open: set[str] = set()  # intents written and not yet done

    def add(self, intent: Intent) -> bool:
        """Append and fsync; False when the disk refuses (the caller keeps it in memory)."""
        ok = self._append({"intent": intent})
        if ok:
            self._open.add(intent["id"])
        return ok

    def done(self, intent_id: str) -> None:
        self._open.discard(intent_id)
        if not self._open:  # nothing left to replay: the journal starts over
            self.clear()
            return
        self._append({"done": intent_id})

    def _append(self, entry: dict[str, Any]) -> bool:
        line = json.dumps(entry, default=_encode, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                return True
            except OSError as exc:
                log.error("airing spool %s not written (%s)", self.path, exc.strerror or exc)
                return False

    def pending(self) -> list[Intent]:
        """Intents not marked done, in the order they were written."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        intents: dict[str, Intent] = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line, object_hook=_decode)
            except ValueError:
                continue  # a line cut short by the crash: its publish never happened
            if "intent" in entry:
                intents[entry["intent"]["id"]] = entry["intent"]
            elif "done" in entry:
                intents.pop(entry["done"], None)
        return list(intents.values())

    def clear(self) -> None:
        """Empty the spool (every intent in it is recorded)."""
        with self._lock:
            try:
                if self.path.exists():
                    os.truncate(self.path, 0)
            except OSError as exc:
                log.error("airing spool %s not cleared (%s)", self.path, exc)
