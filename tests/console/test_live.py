"""Going live from the console on a phone: Chromium's fake microphone plays a WAV file with
marks; a leader starts a live broadcast to Hướng Đạo, speaks, stops; every board played it,
and what they played holds the marks, in step. An officer whose commune wants a leader's
approval is told, in Vietnamese, to ask a leader."""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import ARGS, CHROMIUM, PHONE, Site
from tests.console.test_roles import login, looks_right, nav
from tests.integration.test_stream import heard, mark_times
from tests.utils.broker import wait_for

pytestmark = pytest.mark.integration
RATE = 48_000


@pytest.fixture(scope="module")
def mic(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Any]:
    """A browser whose microphone is a WAV file: a quiet hum with a loud mark every 2 s
    (launched by the suite's own Playwright: one per process)."""
    wav = tmp_path_factory.mktemp("mic") / "voice.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        frames = bytearray()
        for i in range(RATE * 10):
            t = i / RATE
            loud = (t % 2.0) < 0.1
            v = 0.8 * math.sin(2 * math.pi * 1000 * t) if loud else 0.03 * math.sin(2 * math.pi * 200 * t)
            frames += struct.pack("<h", int(v * 32767))
        w.writeframes(bytes(frames))
    b = browser.browser_type.launch(executable_path=CHROMIUM, args=[
        *ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}"])
    try:
        ctx = b.new_context(viewport=PHONE, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh",
                            permissions=["microphone"])
        page = ctx.new_page()
        page.set_default_timeout(20000)
        yield page
    finally:
        b.close()


def test_a_leader_goes_live_from_a_phone_and_every_board_plays_it(site: Site, mic: Any) -> None:
    page = mic
    login(page, site, "lanhdao")
    assert "Phát trực tiếp" in nav(page)
    page.click("nav.tabs a:has-text('Phát trực tiếp')")
    page.wait_for_selector("text=Bắt đầu phát trực tiếp")
    looks_right(page, "live-ready", site, PHONE)
    page.click("button:has-text('Bắt đầu phát trực tiếp')")
    page.wait_for_selector("text=Đang phát trực tiếp", timeout=20000)
    looks_right(page, "live-on-air", site, PHONE)
    page.wait_for_timeout(6000)  # speaking: three marks of the microphone's file
    page.click("button:has-text('Dừng phát')")
    page.wait_for_url("**/#/bulletins/*")
    bid = page.url.rsplit("/", 1)[-1]

    def played() -> Any:
        b = site.admin.get(f"/api/v1/broadcasts/{bid}")
        ds = b["deliveries"]
        return b if len(ds) == 15 and all(d["state"] == "played" for d in ds) else None

    final = wait_for(played, 40, "15 boards played the live voice")
    for d in final["deliveries"]:
        assert d["stream"]["played_ms"] >= 4_000 and d["stream"]["gaps"] == 0, d
    assert site.played is not None
    occ = final["occurrences"][0]["id"]
    got = heard(site.played, occ)
    assert len(got) == 15
    marks = {cid: mark_times(site.played, cid, occ, bs) for cid, bs in got.items()}
    n = min(len(m) for m in marks.values())
    assert n >= 2, marks  # the microphone's marks came through
    for i in range(n):  # and each was heard in step on every board
        at = [m[i] for m in marks.values()]
        assert max(at) - min(at) <= 0.005, at


def test_an_officer_who_needs_approval_is_told_to_ask_a_leader(site: Site, mic: Any) -> None:
    page = mic
    page.click("#logoutBtn")
    login(page, site, "canbo")
    page.click("nav.tabs a:has-text('Phát trực tiếp')")
    page.click("button:has-text('Bắt đầu phát trực tiếp')")
    refusal = page.wait_for_selector(".refusal")
    assert "hãy nhờ lãnh đạo phát" in refusal.inner_text()
    looks_right(page, "live-refused", site, PHONE)
