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
