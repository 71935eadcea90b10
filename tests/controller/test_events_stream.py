"""The console's pushed-changes stream holds no database connection while it is open, and
ends when its session does (logout, a disabled account)."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controller.api.routes import events
from tests.utils.commune import memory_commune


def _read(api: TestClient, headers: dict[str, str], out: queue.Queue[str]) -> None:
    with api.stream("GET", "/api/v1/events", headers=headers) as r:
        out.put(f"status {r.status_code}")
        for line in r.iter_lines():
            out.put(line)
    out.put("closed")


def test_the_stream_ends_when_its_session_does_and_holds_no_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.3)
    with memory_commune(tmp_path) as (api, _link):
        pool = api.app.state.runtime.sessions.kw["bind"].pool
        headers = {"Authorization": api.headers["Authorization"]}
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_read, args=(api, headers, lines), daemon=True)
        reader.start()
        assert lines.get(timeout=10) == "status 200"
        assert lines.get(timeout=10).startswith(": loa events")
        while not lines.get(timeout=10).startswith(": keepalive"):
            pass
        # an open stream does not keep a connection (the feed's poll and the token check
        # each borrow one for a moment)
        samples = []
        for _ in range(20):
            samples.append(pool.checkedout())
            time.sleep(0.05)
        assert samples.count(0) >= 15, samples

        assert api.post("/api/v1/auth/logout").status_code == 204
        seen = []
        while (line := lines.get(timeout=10)) != "closed":
            seen.append(line)
        assert "event: session_ended" in seen
        reader.join(5)
        r = api.get("/api/v1/events", headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "token_invalid"
