"""One controller per database, enforced by a lock the database side holds for the life of
the process: a second ``loa serve`` on the same database refuses to start, or, started as a
standby (``loa serve --standby``), waits for the lock and becomes the controller as soon as
the active one is gone.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of
  its own, kept open; the server releases it when that connection ends (the process exits
  or is killed). If the connection is lost (the server restarts), the lock is taken again
  once it is back; if another controller took it meanwhile, this one stops.
- SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the database file; the
  kernel releases it when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

__all__ = ["AnotherController", "DatabaseLock"]

#: the advisory lock's key: one 63-bit number from the application's name
_PG_KEY = int.from_bytes(hashlib.sha256(b"loa-controller").digest()[:8], "big") >> 1


class AnotherController(RuntimeError):
    """Another controller process holds this database."""


class DatabaseLock:
    def __init__(self, db_url: str):
        self.db_url = db_url
        self._fd: int | None = None
        self._conn: Connection | None = None
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        #: called when the lock is lost for good (another controller holds it now)
        self.on_lost = lambda: os._exit(3)

    @property
    def sqlite_path(self) -> Path | None:
        url = make_url(self.db_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    def acquire(self) -> None:
        if make_url(self.db_url).get_backend_name() == "sqlite":
            self._acquire_sqlite()
        else:
            if self._engine is None:
                self._engine = create_engine(self.db_url, poolclass=NullPool)
            if not self._acquire_pg():
                raise AnotherController(
                    "another controller holds this database (PostgreSQL advisory lock "
                    f"{_PG_KEY}); run one `loa serve` per database")
            self._watch = threading.Thread(target=self._watch_pg, name="loa-db-lock",
                                           daemon=True)
            self._watch.start()

    def wait_acquire(self, every_s: float = 0.5, waiting: Callable[[], None] | None = None
                     ) -> float:
        """A standby: wait until the lock is free (the active controller stopped, was
        killed, or lost its database), take it and return how long it waited. ``waiting``
        is called once, when the first try finds the lock held."""
        began = time.monotonic()
        while True:
            try:
                self.acquire()
                return time.monotonic() - began
            except AnotherController:
                if waiting is not None:
                    waiting()
                    waiting = None
            time.sleep(every_s)

    def release(self) -> None:
        self._stop.set()
        if self._fd is not None:
            os.close(self._fd)  # (closing the file releases the flock)
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):  # (a connection already lost)
                self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()

    # --- SQLite -------------------------------------------------------------------------

    def _acquire_sqlite(self) -> None:
        path = self.sqlite_path
        if path is None:
            return  # an in-memory database belongs to this process anyway
        lock = path.with_name(path.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (30, 13):  # read-only file system, permission denied
                log.warning("cannot create %s (%s): the one-controller lock is not held",
                            lock, exc.strerror)
                return
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AnotherController(
                f"another controller holds {path} ({holder or 'unknown process'}); run one "
                "`loa serve` per database") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    # --- PostgreSQL ---------------------------------------------------------------------

    def _acquire_pg(self) -> bool:
        assert self._engine is not None
        conn = self._engine.connect()
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_KEY}).scalar())
        conn.commit()
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def _watch_pg(self) -> None:
        """Every 2 s: is the lock's connection alive? If not, take the lock again."""
        while not self._stop.wait(2.0):
            try:
                assert self._conn is not None
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                continue
            except SQLAlchemyError as exc:
                log.debug("database lock connection: %s", exc)
            if self._conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    self._conn.close()
            self._conn = None
            log.warning("lost the database lock's connection; taking the lock again")
            while not self._stop.is_set():
                try:
                    if self._acquire_pg():
                        log.info("database lock held again")
                        break
                    log.critical("another controller took this database while its server "
                                 "was away: this one stops")
                    self.on_lost()
                    return
                except SQLAlchemyError:  # the server is not back yet
                    if self._stop.wait(2.0):
                        return
