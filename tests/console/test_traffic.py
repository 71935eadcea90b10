"""What the console costs a phone on 4G, measured in Chromium at the network layer (the
DevTools protocol's bytes received): the first load up to a working screen, and an idle
screen, which the pushed updates keep nearly silent (no polling)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.console.conftest import PASSWORD, PHONE, Site

pytestmark = pytest.mark.integration

FIRST_LOAD_MAX = 300_000
IDLE_PER_10_MIN_MAX = 200_000
IDLE_WINDOW_S = 20.0


class Meter:
    def __init__(self, page: Any):
        self.bytes = 0
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.dataReceived", lambda e: self._add(e.get("encodedDataLength", 0)))
        cdp.on("Network.responseReceived",
               lambda e: self._add(e["response"].get("encodedDataLength", 0)))

    def _add(self, n: int) -> None:
        self.bytes += int(n or 0)


def test_first_load_and_an_idle_screen_cost_little(site: Site, browser: Any) -> None:
    context = browser.new_context(viewport=PHONE, locale="vi-VN")
    page = context.new_page()
    try:
        meter = Meter(page)
        page.goto(site.base + "/")
        page.fill("input[name=username]", "kythuat")
        page.fill("input[name=password]", PASSWORD)
        page.click("#loginForm button")
        page.wait_for_selector("#fleetSummary")
        page.wait_for_selector("text=Cập nhật trực tiếp")
        first = meter.bytes
        assert first <= FIRST_LOAD_MAX, f"first load {first} bytes"
        # (what the tests before this one did to the commune settles first: a change in the
        # commune is news the screen fetches, not idle traffic)
        quiet_since, last, deadline = time.monotonic(), meter.bytes, time.monotonic() + 30
        while time.monotonic() - quiet_since < 3 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
            if meter.bytes != last:
                quiet_since, last = time.monotonic(), meter.bytes
        start = meter.bytes
        t0 = time.monotonic()
        page.wait_for_timeout(IDLE_WINDOW_S * 1000)  # a person looking at the fleet
        idle = meter.bytes - start
        per_10_min = idle * 600 / (time.monotonic() - t0)
        print(f"console first load {first} B; idle {idle} B in {IDLE_WINDOW_S:.0f} s "
              f"(~{per_10_min / 1000:.1f} kB per 10 min)")
        assert per_10_min <= IDLE_PER_10_MIN_MAX, f"idle: {idle} bytes in {IDLE_WINDOW_S} s"
    finally:
        context.close()
