"""The admin's screens (and the technician's network screen) in Chromium at phone and desktop
size: accounts created and disabled, the area's policy changed, each of those found again in
the audit log in Vietnamese, a board's provisioning bundle downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import COMMUNE, PHONE, Site
from tests.console.test_roles import login, looks_right, nav
from tests.integration.harness import ADMIN_PASSWORD

pytestmark = pytest.mark.integration


def test_an_admin_creates_then_disables_an_account(site: Site, page: Any,
                                                    size: dict[str, int]) -> None:
    user = "thuky" if size == PHONE else "thuky2"
    login(page, site, "admin", ADMIN_PASSWORD)
    assert nav(page)[-4:] == ["Tài khoản", "Quy định", "Mạng lưới", "Nhật ký"]
    page.click("nav.tabs a:has-text('Tài khoản')")
    page.get_by_label("Tên đăng nhập").fill(user)
    page.get_by_label("Mật khẩu", exact=True).fill("password")
    page.click("button:has-text('Tạo tài khoản') >> nth=-1")
    refusal = page.wait_for_selector(".refusal")
    assert "Mật khẩu quá yếu" in refusal.inner_text()  # said in Vietnamese, where it happened
    page.get_by_label("Mật khẩu", exact=True).fill("Thư-ký-xã-2026-mới")
    page.click("button:has-text('Tạo tài khoản') >> nth=-1")
    page.wait_for_selector(f"text=Đã tạo tài khoản {user}.")
    row = page.locator("#userList li", has_text=user)
    looks_right(page, "admin-users", site, size)
    row.locator("button:has-text('Khóa')").click()
    page.click("dialog button:has-text('Xác nhận')")
    page.wait_for_selector(f"#userList li:has-text('{user}'):has-text('đã khóa')")
    page.click("nav.tabs a:has-text('Nhật ký')")
    page.get_by_label("Loại thao tác").select_option("users")
    page.wait_for_selector("#auditList li:has-text('Sửa tài khoản')")
    assert page.locator("#auditList li:has-text('Tạo tài khoản')").count() >= 1
    looks_right(page, "admin-audit", site, size)


def test_an_admin_sets_quiet_hours_for_the_commune(site: Site, page: Any,
                                                   size: dict[str, int]) -> None:
    login(page, site, "admin", ADMIN_PASSWORD)
    page.click("nav.tabs a:has-text('Quy định')")
    page.get_by_label("Địa bàn").select_option(COMMUNE)
    # the commune's own values, not the first area's form still on screen
    quiet = page.locator(f"[data-area='{COMMUNE}'] fieldset:has-text('Giờ yên tĩnh') input")
    quiet.nth(0).wait_for()
    try:
        quiet.nth(0).fill("22:00")
        quiet.nth(1).fill("05:00")
        page.click("button:has-text('Lưu quy định')")
        page.wait_for_selector("text=Đã lưu.")
        looks_right(page, "admin-policy", site, size)
        policy = site.admin.get(f"/api/v1/areas/{COMMUNE}/policy")["effective"]
        assert policy["quiet_hours"] == [{"start": "22:00:00", "end": "05:00:00"}]
    finally:
        site.admin.call("PUT", f"/api/v1/areas/{COMMUNE}/policy", b'{"quiet_hours": []}')


def test_a_technician_downloads_a_boards_bundle(site: Site, page: Any,
                                               size: dict[str, int]) -> None:
    login(page, site, "kythuat")
    page.click("nav.tabs a:has-text('Mạng lưới')")
    row = page.wait_for_selector("#boardList li:has-text('hd-c15')")
    looks_right(page, "technician-network", site, size)
    with page.expect_download() as dl:
        row.query_selector("button:has-text('Cấp khóa kết nối')").click()  # type: ignore[union-attr]
        page.click("dialog button:has-text('Xác nhận')")
    bundle = json.loads(Path(dl.value.path()).read_text())
    assert bundle["username"] == "hd-c15" and len(bundle["password"]) >= 32
    page.wait_for_selector("text=nạp tệp này vào thiết bị")
