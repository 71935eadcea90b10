"""Each role's tasks in the console, in Chromium, at phone (390 × 844) and desktop (1366 × 768)
size, asserting what a person sees: the screens their role allows and no other, the task
done end to end, no horizontal scroll, touch targets of 44 px, no English left on a
Vietnamese screen, reachable by keyboard."""

from __future__ import annotations

import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import COMMUNE, PASSWORD, PHONE, Site
from tests.utils.broker import wait_for

pytestmark = pytest.mark.integration

#: words of the API's English messages and states that must never reach a Vietnamese screen
ENGLISH = {"the", "and", "cluster", "clusters", "speaker", "speakers", "online", "offline",
           "played", "playing", "failed", "scheduled", "pending", "refused", "quiet", "hours",
           "error", "broadcast", "approve", "village", "open", "circuit", "link", "lost",
           "starts", "time", "loading", "degraded", "emergency", "priority", "normal",
           "cancel", "cancelled", "approval", "alert", "alerts", "self", "test", "done",
           "object", "undefined", "null", "nan", "true", "false", "power", "source"}


#: every visible text on its own background ≥ 4.5:1 (large text ≥ 3:1); input borders ≥ 3:1
CONTRAST_JS = r"""() => {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92
      : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
      return (x + 0.05) / (y + 0.05); };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3); }
    return [255, 255, 255]; };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (!el.offsetParent) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const st = getComputedStyle(el);
    if (own && !el.closest('[disabled]')) {
      const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight) >= 700;
      const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
      const r = ratio(rgb(st.color).slice(0, 3), bg(el));
      if (r < need) out.push([el.tagName, el.className, el.textContent.trim().slice(0, 30),
                              r.toFixed(2)]);
    }
    if (el.matches('input:not([type=checkbox]):not([type=radio]), select, textarea')) {
      const r = ratio(rgb(st.borderTopColor).slice(0, 3), bg(el.parentElement));
      if (r < 3) out.push([el.tagName, 'border', r.toFixed(2)]);
    }
  }
  return out;
}"""


def login(page: Any, site: Site, user: str, password: str = PASSWORD) -> None:
    page.goto(site.base + "/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("#loginForm button")
    page.wait_for_selector("#logoutBtn")


def looks_right(page: Any, what: str, site: Site, size: dict[str, int]) -> None:
    """What every screen owes a person: it fits the width, its controls can be touched,
    it speaks Vietnamese. A screenshot is kept for a person to look at."""
    # (the events stream stays open: "network idle" never comes; "loading" leaving does)
    page.wait_for_function("!document.body.innerText.includes('Đang tải')")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size["width"], f"{what}: {width} px wide at {size['width']} px"
    small = page.evaluate("""() => [...document.querySelectorAll(
        'button, a.tab, a.row-link, a.back, input:not([type=checkbox]):not([type=radio]), select, label.check, label.pill')]
        .filter(e => e.offsetParent !== null)
        .map(e => [e.outerHTML.slice(0, 80), e.getBoundingClientRect().height])
        .filter(([, h]) => h < 44)""")
    assert small == [], f"{what}: controls under 44 px: {small}"
    low = page.evaluate(CONTRAST_JS)
    assert low == [], f"{what}: under WCAG 2.1 AA contrast: {low}"
    text = page.evaluate("document.body.innerText")
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
    english = words & ENGLISH
    assert not english, f"{what}: English on a Vietnamese screen: {sorted(english)}\n{text}"
    page.screenshot(path=str(site.shots / f"{what}-{size['width']}.png"), full_page=True)


def nav(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("nav.tabs a").all_inner_texts()]


def test_an_officer_composes_a_weekly_bulletin_that_waits_for_approval(
        site: Site, page: Any, size: dict[str, int]) -> None:
    login(page, site, "canbo")
    assert nav(page) == ["Soạn tin", "Phát trực tiếp", "Lịch phát", "Bản tin", "Tin cấp trên"]  # no approving
    looks_right(page, "officer-compose-empty", site, size)
    page.fill("textarea", "Thông báo lịch tiêm phòng cho gia súc tại nhà văn hóa thôn.")
    page.click("text=Tạo âm thanh để nghe thử")
    page.wait_for_selector("audio")
    duration = page.evaluate("""() => new Promise(r => { const a = document.querySelector('audio');
        if (a.readyState >= 1) r(a.duration); else a.onloadedmetadata = () => r(a.duration); })""")
    assert duration > 1.5  # what the officer listens to is the real speech
    page.check("text=Hằng tuần")
    page.uncheck("label.day:has-text('T7') input")  # Mon–Fri
    page.fill("input[inputmode=numeric]", "05:30, 17:00")
    page.click("text=Xem trước lịch")
    page.wait_for_selector("text=Lịch dự kiến")
    looks_right(page, "officer-compose-preview", site, size)
    before = len(site.admin.get("/api/v1/broadcasts?limit=200"))
    send = page.locator("button:has-text('Gửi bản tin')")
    send.dblclick()  # a double tap sends once
    page.wait_for_url(re.compile(r"#/bulletins/"))
    page.wait_for_selector("text=chờ duyệt")
    assert len(site.admin.get("/api/v1/broadcasts?limit=200")) == before + 1
    assert page.locator("text=T2, T3, T4, T5, T6 lúc 05:30, 17:00").count() == 1
    looks_right(page, "officer-bulletin", site, size)


def test_a_refusal_is_said_in_vietnamese_where_it_happened(site: Site, page: Any,
                                                           size: dict[str, int]) -> None:
    site.admin.call("PUT", f"/api/v1/areas/{COMMUNE}/policy",
                    b'{"quiet_hours": [{"start": "00:00", "end": "23:59"}]}')
    try:
        login(page, site, "canbo")
        page.fill("textarea", "Thông báo thử giờ yên tĩnh.")
        page.click("text=Tạo âm thanh để nghe thử")
        page.wait_for_selector("audio")
        page.click("text=Gửi bản tin")
        alert = page.wait_for_selector(".refusal")
        text = alert.inner_text()
        assert "Quy định phát thanh của địa bàn không cho phép" in text
        assert "giờ yên tĩnh 00:00–23:59" in text
        looks_right(page, "officer-refused", site, size)
    finally:
        site.admin.call("PUT", f"/api/v1/areas/{COMMUNE}/policy", b'{"quiet_hours": []}')


def _pending(site: Site) -> str:
    """An officer's bulletin waiting for a leader (made through the API)."""
    from tests.integration.harness import HttpApi

    officer = HttpApi(site.base)
    body = urllib.parse.urlencode({"username": "canbo", "password": PASSWORD}).encode()
    officer.token = officer.call("POST", "/api/v1/auth/token", body,
                                 "application/x-www-form-urlencoded")[1]["access_token"]
    _s, c = officer.post("/api/v1/contents/tts", {"text": "Họp dân thôn lúc bảy giờ tối."})
    start = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    status, b = officer.post("/api/v1/broadcasts", {"content_id": c["id"], "title": "Họp dân",
                                                     "targets": {"areas": [COMMUNE]},
                                                     "start_at": start})
    assert status == 201 and b["status"] == "pending_approval", b
    return str(b["id"])


def test_a_leader_listens_then_approves(site: Site, page: Any, size: dict[str, int]) -> None:
    bid = _pending(site)
    login(page, site, "lanhdao")
    assert nav(page)[0] == "Chờ duyệt"
    card = page.locator("article.card", has_text="Họp dân").first
    approve = card.locator("button:has-text('Duyệt phát')")
    assert approve.is_disabled()  # not before listening
    looks_right(page, "leader-queue", site, size)
    card.locator("button:has-text('Nghe')").click()
    card.locator("audio").wait_for()
    approve.click()
    page.wait_for_selector("text=Đã duyệt.")
    assert site.admin.get(f"/api/v1/broadcasts/{bid}")["status"] == "scheduled"
    page.click("nav.tabs a:has-text('Lịch phát')")  # and it is in the week's programme
    item = page.wait_for_selector(f"#week a[href='#/bulletins/{bid}']")
    assert "Họp dân" in item.inner_text()
    looks_right(page, "leader-programme", site, size)


def test_a_technician_finds_the_blown_horn_by_self_test(site: Site, page: Any,
                                                        size: dict[str, int]) -> None:
    board = "hd-c04" if size == PHONE else "hd-c05"  # (each size its own board and alert)
    site.fault(board, "blown_speaker", index=2)
    _s, c = site.admin.post("/api/v1/contents/tts", {"text": "Phát thanh buổi tối."})
    status, b = site.admin.post("/api/v1/broadcasts", {  # the next slot the fleet must be ready for
        "content_id": c["id"], "title": "Bản tin tối", "targets": {"areas": [COMMUNE]},
        "start_at": (datetime.now(UTC) + timedelta(hours=3)).isoformat()})
    assert status == 201 and b["status"] == "scheduled", b
    login(page, site, "kythuat")
    assert nav(page) == ["Thiết bị", "Cảnh báo", "Mạng lưới", "Ngưỡng", "Bản tin"]
    page.wait_for_selector("#fleetSummary")
    readiness = page.wait_for_selector("#readiness")  # the next slot: who will not play it
    assert re.search(r"\d+/\d+ cụm sẽ phát", readiness.inner_text())
    page.click("#availability summary")
    assert "%" in page.inner_text("#availability")
    looks_right(page, "technician-fleet", site, size)
    page.click(f"#clusterList a:has-text('{board}')")
    page.wait_for_selector(f"h1:has-text('{board}')")
    page.click("button:has-text('Tự kiểm tra loa')")
    result = page.wait_for_selector("#selfTestResult", timeout=30000)
    assert "Loa 2: hở mạch" in result.inner_text()
    assert "Loa 1: tốt" in result.inner_text()
    speaker = page.locator("ul.speakers li").first  # mute a speaker remotely, then back
    speaker.locator("button:has-text('Tắt loa này')").click()
    page.wait_for_selector("ul.speakers li:first-child :text('đã tắt')", timeout=30000)
    page.locator("ul.speakers li").first.locator("button:has-text('Bật lại')").click()
    page.wait_for_selector("ul.speakers li:first-child :text('tốt')", timeout=30000)
    looks_right(page, "technician-cluster", site, size)
    # and the alert it raised, in Vietnamese, acknowledged
    page.click("nav.tabs a:has-text('Cảnh báo')")
    row = page.wait_for_selector(f"#alertList li:has-text('{board}'):has-text('hở mạch')",
                                 timeout=30000)
    looks_right(page, "technician-alerts", site, size)
    row.query_selector("button:has-text('Đã biết')").click()  # type: ignore[union-attr]
    page.wait_for_selector(f"#alertList li:has-text('{board}'):has-text('Đã xác nhận bởi kythuat')")


def test_an_emergency_asks_first_then_shows_the_proof_per_village(
        site: Site, page: Any, size: dict[str, int], tmp_path: Path) -> None:
    login(page, site, "lanhdao")
    page.click("nav.tabs a:has-text('Soạn tin')")
    page.fill("textarea", "Khẩn cấp: nước sông dâng cao, di chuyển lên chỗ cao.")
    page.click("text=Tạo âm thanh để nghe thử")
    page.wait_for_selector("audio")
    page.get_by_label("Mức ưu tiên").select_option("emergency")
    page.click("button:has-text('Gửi bản tin')")
    dialog = page.wait_for_selector("dialog[open]")
    assert "KHẨN CẤP" in dialog.inner_text()
    looks_right(page, "emergency-confirm", site, size)
    page.click("dialog button:has-text('Thôi')")  # changed its mind: nothing sent
    assert page.locator("dialog[open]").count() == 0
    page.click("button:has-text('Gửi bản tin')")
    page.click("dialog button:has-text('Xác nhận')")
    page.wait_for_url(re.compile(r"#/bulletins/"))
    proof = page.wait_for_selector("#proof")
    wait_for(lambda: "15/15" in page.inner_text("body") or
             page.locator("#proof tr.ok").count() == 14, 40,
             "every village's proof on the page (pushed, not reloaded)")
    assert page.locator("#proof tbody tr").count() == 14 and proof
    looks_right(page, "bulletin-proof", site, size)
    with page.expect_download() as dl:
        page.click("button:has-text('Tải báo cáo CSV')")
    csv = Path(dl.value.path()).read_text("utf-8-sig")
    assert csv.splitlines()[0].startswith("Mã địa bàn,Tên,Số cụm nhận")


def test_the_session_ending_returns_to_the_login_with_nothing_left(
        site: Site, page: Any, size: dict[str, int]) -> None:
    login(page, site, "kythuat")
    page.wait_for_selector("#fleetSummary")
    token = page.evaluate("sessionStorage.getItem('loa-token')")
    from tests.integration.harness import HttpApi

    other = HttpApi(site.base)
    other.token = token
    other.post("/api/v1/auth/logout", {})  # the session ends elsewhere (revoked)
    page.evaluate("sessionStorage.removeItem('loa-refresh')")
    page.evaluate("location.hash = '#/alerts'")  # the next thing the person does (unless the
    page.wait_for_selector("#login")             # pushed-updates stream noticed first)
    assert "Phiên làm việc đã hết hạn" in page.inner_text("#login")
    assert page.locator("#fleetSummary").count() == 0
    assert page.input_value("input[name=password]") == ""


def test_every_bulletin_row_is_reached_by_keyboard(site: Site, page: Any,
                                                   size: dict[str, int]) -> None:
    login(page, site, "lanhdao")
    page.click("nav.tabs a:has-text('Bản tin')")
    page.wait_for_selector("#bulletinList a")
    rows = page.locator("#bulletinList a").count()
    reached: set[str] = set()
    for _ in range(rows + 40):
        page.keyboard.press("Tab")
        href = page.evaluate("document.activeElement.getAttribute('href') || ''")
        if href.startswith("#/bulletins/"):
            reached.add(href)
    assert len(reached) == rows
    page.reload()
    page.wait_for_selector("#bulletinList a")
    for _ in range(40):  # to the first bulletin, and open it with Enter
        page.keyboard.press("Tab")
        if page.evaluate("(document.activeElement.getAttribute('href') || '')"
                         ".startsWith('#/bulletins/')"):
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Xác nhận phát theo thôn")


def test_an_officer_schedules_a_recording_from_the_library(site: Site, page: Any,
                                                           size: dict[str, int]) -> None:
    _pending(site)  # (an officer of the commune has had a text read: it is in the library)
    login(page, site, "canbo")
    page.check("text=Bản ghi đã có")
    page.get_by_label("Chọn bản ghi").select_option(index=1)
    page.wait_for_selector("audio")
    assert page.input_value(f"#{page.get_by_label('Tiêu đề').get_attribute('id')}") != ""
    looks_right(page, "officer-library", site, size)
