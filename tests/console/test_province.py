"""The province's console: a leader of the province targets whole communes (shown by name,
with their villages under them), sends an emergency after confirming it, and sees who
played per commune; each bulletin is listed once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import Site
from tests.console.test_roles import login, looks_right
from tests.utils.broker import wait_for

pytestmark = pytest.mark.integration


def test_a_province_sends_an_emergency_to_three_communes_and_sees_each_one(
        province: Site, page: Any, size: dict[str, int]) -> None:
    p = page
    login(p, province, "tinh")
    p.click("nav.tabs a:has-text('Soạn tin')")
    text = f"Khẩn cấp: bão số {size['width'] % 7} đổ bộ, người dân ở trong nhà."
    p.fill("textarea", text)
    p.click("text=Tạo âm thanh để nghe thử")
    p.wait_for_selector("audio")
    p.uncheck("text=Toàn bộ Tỉnh mô phỏng")
    for n in (1, 2, 3):  # each commune by its name, its villages under it
        assert p.locator(f"fieldset.commune legend:has-text('Xã mô phỏng {n}')").count() == 1
    looks_right(p, "province-targets", province, size)
    for n in (1, 2, 3):
        p.check(f"text=Cả Xã mô phỏng {n}")
    p.get_by_label("Mức ưu tiên").select_option("emergency")
    p.click("button:has-text('Gửi bản tin')")
    p.click("dialog button:has-text('Xác nhận')")
    p.wait_for_url("**/#/bulletins/*")
    p.wait_for_selector("#proof")
    wait_for(lambda: p.locator("#proof tbody tr.ok").count() == 3, 40,
             "each commune's roll-up: all its boards played")
    rows = p.locator("#proof tbody tr").all_inner_texts()
    assert sorted(r.split("\t")[0].strip() for r in rows) == [
        "Xã mô phỏng 1", "Xã mô phỏng 2", "Xã mô phỏng 3"], rows
    assert all("2/2" in r for r in rows), rows
    looks_right(p, "province-rollup", province, size)
    p.click("a.back")
    p.wait_for_selector("#bulletinList")
    titles = p.locator("#bulletinList strong").all_inner_texts()
    assert titles.count(text) == 1, titles  # once, not once more per commune


def test_a_province_reads_the_cap_alerts_it_sent_and_the_replies(
        province: Site, page: Any, size: dict[str, int]) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from tests.console.conftest import PASSWORD
    from tests.integration.harness import HttpApi

    now = datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).replace(microsecond=0)
    ident = f"VP-KTTV-{size['width']}"
    headline = f"Mưa lớn ở Xã mô phỏng 1 ({size['width']})"
    alert = f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{ident}</identifier><sender>kttv@vinhphuc.gov.vn</sender>
  <sent>{now.isoformat()}</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>
  <info><language>vi-VN</language><category>Met</category><event>Mưa lớn</event>
    <urgency>Expected</urgency><severity>Moderate</severity><certainty>Likely</certainty>
    <expires>{(now + timedelta(hours=6)).isoformat()}</expires>
    <headline>{headline}</headline><description>Mưa to kéo dài đến tối nay.</description>
    <area><areaDesc>Xã mô phỏng 1</areaDesc></area></info>
</alert>""".encode()
    tinh = HttpApi(province.base).login("tinh", PASSWORD)
    status, body = tinh.call("POST", "/api/v1/cap", alert, "application/xml")
    assert status == 201, body
    status, body = tinh.call("POST", "/api/v1/cap", b"<alert>not CAP</alert>", "application/xml")
    assert status == 422, body

    login(page, province, "tinh")
    page.click("nav.tabs a:has-text('Cảnh báo CAP')")
    row = page.locator(f"#capList li:has-text('{headline}')")
    row.wait_for()
    assert "đã nhận" in row.inner_text() and "Đã tạo 1 bản tin" in row.inner_text()
    refused = page.locator("#capList li:has-text('Không phải bản tin CAP 1.2 hợp lệ')").first
    assert "bị từ chối" in refused.inner_text()
    looks_right(page, "province-cap", province, size)
    row.locator("summary").click()
    row.locator("pre.xml").wait_for()
    reply = row.locator("pre.xml").inner_text()
    assert "<msgType>Ack</msgType>" in reply and ident in reply
    row.locator("a.go").click()
    page.wait_for_selector("#proof")
    assert headline in page.inner_text("h1")
