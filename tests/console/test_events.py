"""The console's pushed updates (GET /api/v1/events, Server-Sent Events) over real HTTP: only
with a token, a comment first, then the topics that changed when something changes; an
idle stream carries next to nothing. No browser needed."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.console.conftest import Site

pytestmark = pytest.mark.integration


def test_the_stream_needs_a_token(site: Site) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(site.base + "/api/v1/events", timeout=5)
    assert exc.value.code == 401
    exc.value.close()


def _events(site: Site) -> socket.socket:
    host, port = site.base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\n"
              f"Authorization: Bearer {site.admin.token}\r\n"
              "Accept-Encoding: gzip\r\n\r\n".encode())  # (as a browser asks)
    return s


def _read_until(s: socket.socket, what: bytes, deadline_s: float) -> bytes:
    got = b""
    end = time.monotonic() + deadline_s
    while what not in got:
        s.settimeout(max(0.1, end - time.monotonic()))
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
        assert time.monotonic() < end, got
    return got


def test_a_change_is_pushed_by_topic_and_idle_costs_almost_nothing(site: Site) -> None:
    s = _events(site)
    try:
        head = _read_until(s, b": loa events", 10)
        assert b"200 OK" in head and b"text/event-stream" in head
        assert b"content-encoding" not in head.lower()  # never compressed: it would buffer
        s.settimeout(5)
        try:  # nothing changes: nothing comes (the keepalive is every 30 s)
            quiet = s.recv(65536)
        except TimeoutError:
            quiet = b""
        assert b"data:" not in quiet
        _status, c = site.admin.post("/api/v1/contents/tts", {"text": "Thử luồng sự kiện."})
        status, b = site.admin.post("/api/v1/broadcasts", {
            "content_id": c["id"], "targets": {"clusters": ["hd-c09"]}, "priority": "emergency"})
        assert status == 201, b
        got = _read_until(s, b"broadcasts", 15)
        line = next(x for x in got.split(b"\n") if x.startswith(b"data:") and b"broadcasts" in x)
        assert "broadcasts" in json.loads(line[5:])["topics"]
    finally:
        s.close()
