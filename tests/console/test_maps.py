"""Maps drawn from the villages' and boards' own coordinates: an officer chooses villages by
tapping them (and by keyboard), a technician sees the boards by state and opens one."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.console.conftest import Site
from tests.console.test_roles import login, looks_right

pytestmark = pytest.mark.integration


def test_an_officer_chooses_villages_on_the_map(site: Site, page: Any,
                                                size: dict[str, int]) -> None:
    login(page, site, "canbo")
    title = f"Họp dân hai thôn ({size['width']})"
    page.fill("textarea", "Mời bà con thôn Đồng Bông và Đồng Cả họp tại nhà văn hóa.")
    page.click("text=Tạo âm thanh để nghe thử")
    page.wait_for_selector("audio")
    page.get_by_label("Tiêu đề").fill(title)
    page.uncheck("text=Toàn bộ")
    page.click("button:has-text('Bản đồ')")
    village = page.locator(".placemap g.pt")
    assert village.count() == 14  # every village of the commune, each where it lies
    page.click(".placemap g[aria-label^='Thôn Đồng Bông']")
    page.focus(".placemap g[aria-label^='Thôn Đồng Cả']")
    page.keyboard.press("Enter")  # reachable without a finger
    page.wait_for_selector("text=Đã chọn: Thôn Đồng Bông, Thôn Đồng Cả.")
    chosen = page.locator(".placemap g[aria-checked=true]")
    assert chosen.count() == 2
    looks_right(page, "officer-map", site, size)
    page.click("button:has-text('Gửi bản tin')")
    page.wait_for_url(re.compile(r"#/bulletins/"))
    mine = [b for b in site.admin.get("/api/v1/broadcasts?limit=200") if b["title"] == title]
    assert len(mine) == 1 and sorted(mine[0]["targets"]["areas"]) == ["hd-v01", "hd-v02"]


def test_a_technician_sees_the_boards_on_the_map_and_opens_one(site: Site, page: Any,
                                                               size: dict[str, int]) -> None:
    login(page, site, "kythuat")
    page.click("button:has-text('Bản đồ')")
    boards = page.locator(".placemap g.pt")
    boards.first.wait_for()
    assert boards.count() == 15
    assert page.locator(".placemap g.st-online").count() >= 1
    looks_right(page, "technician-map", site, size)
    page.click(".placemap g[aria-label^='Cụm loa thôn Đồng Bông 1']")
    page.wait_for_url(re.compile(r"#/fleet/hd-c01"))
    page.wait_for_selector("h1:has-text('Cụm loa thôn Đồng Bông 1')")
