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
    assert nav(page)[-5:] == ["Tài khoản", "Quy định", "Ngưỡng", "Mạng lưới", "Nhật ký"]
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
    # (the list refreshes with the filter: both entries appear in the filtered list)
    page.wait_for_selector("#auditList li:has-text('Sửa tài khoản')")
    page.wait_for_selector("#auditList li:has-text('Tạo tài khoản')")
    looks_right(page, "admin-audit", site, size)


def test_an_admin_sets_quiet_hours_for_the_commune(site: Site, page: Any,
                                                   size: dict[str, int]) -> None:
    login(page, site, "admin", ADMIN_PASSWORD)
    page.click("nav.tabs a:has-text('Quy định')")
    # what the commune already has and the form does not show is kept
    site.admin.call("PUT", f"/api/v1/areas/{COMMUNE}/policy", b'{"max_programme_s": 1200}')
    page.get_by_label("Địa bàn").select_option(COMMUNE)
    # the commune's own values, not the first area's form still on screen
    quiet = page.locator(f"[data-area='{COMMUNE}'] fieldset:has-text('Giờ yên tĩnh') input")
    quiet.nth(0).wait_for()
    try:
        quiet.nth(0).fill("22:00")
        quiet.nth(1).fill("05:00")
        slots = page.locator(f"[data-area='{COMMUNE}'] #programmeSlots .slot")
        assert slots.count() == 2  # inherited: 05:30 and 17:00, Monday to Saturday
        page.click("button:has-text('Thêm khung giờ')")
        slots.nth(2).locator("input[type=time]").fill("11:15")
        slots.nth(2).locator("label.day:has-text('T2') input").uncheck()
        page.click("button:has-text('Lưu quy định')")
        page.wait_for_selector("text=Đã lưu.")
        looks_right(page, "admin-policy", site, size)
        policy = site.admin.get(f"/api/v1/areas/{COMMUNE}/policy")["effective"]
        assert policy["quiet_hours"] == [{"start": "22:00:00", "end": "05:00:00"}]
        own = site.admin.get(f"/api/v1/areas/{COMMUNE}/policy")["override"]
        assert own["max_programme_s"] == 1200
        assert [(p["at"], p["days"]) for p in own["programme"]] == [
            ("05:30:00", [0, 1, 2, 3, 4, 5]), ("17:00:00", [0, 1, 2, 3, 4, 5]),
            ("11:15:00", [1, 2, 3, 4, 5])]
        assert "approval_required" not in own  # untouched: still inherited
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


def test_a_technician_tunes_the_communes_alert_thresholds(site: Site, page: Any,
                                                          size: dict[str, int]) -> None:
    login(page, site, "kythuat")
    page.click("nav.tabs a:has-text('Ngưỡng')")
    form = page.locator(f"[data-area='{COMMUNE}']")
    form.wait_for()  # the technician's own commune
    temp = form.get_by_label("Ampli quá nóng trên (°C)")
    assert temp.input_value() == "70"  # the default it inherits
    try:
        temp.fill("62")
        page.click("button:has-text('Lưu ngưỡng')")
        page.wait_for_selector("text=Đã lưu.")
        looks_right(page, "technician-thresholds", site, size)
        got = site.admin.get(f"/api/v1/areas/{COMMUNE}/thresholds")
        assert got["override"] == {"amp_temp_c": 62}
        assert got["effective"]["amp_temp_c"] == 62 and got["effective"]["rssi_dbm"] == -100
    finally:
        site.admin.call("PUT", f"/api/v1/areas/{COMMUNE}/thresholds", b"{}")


def test_an_admin_changes_an_accounts_role(site: Site, page: Any, size: dict[str, int]) -> None:
    user = f"doivaitro{size['width']}"
    status, body = site.admin.post("/api/v1/users", {"username": user, "password": "Đổi-vai-trò-2026",
                                                     "role": "officer", "area_id": COMMUNE})
    assert status == 201, body
    login(page, site, "admin", ADMIN_PASSWORD)
    page.click("nav.tabs a:has-text('Tài khoản')")
    row = page.locator("#userList li", has_text=user)
    row.locator("summary:has-text('Đổi vai trò, địa bàn')").click()
    row.get_by_label("Vai trò").select_option("technician")
    row.locator("button:has-text('Lưu thay đổi')").click()
    page.click("dialog button:has-text('Xác nhận')")
    page.wait_for_selector(f"#userList li:has-text('{user}'):has-text('Kỹ thuật viên')")
    looks_right(page, "admin-role", site, size)
    who = {u["username"]: u for u in site.admin.get("/api/v1/users")}[user]
    assert (who["role"], who["area_id"]) == ("technician", COMMUNE)


def test_a_technician_reads_availability_by_month(site: Site, page: Any,
                                                  size: dict[str, int]) -> None:
    login(page, site, "kythuat")
    page.click("#availability summary")
    page.click("button:has-text('Theo tháng')")
    page.wait_for_selector("#availability th:has-text('Tháng')")
    rows = page.locator("#availability tbody tr")
    assert rows.count() == 12, rows.all_inner_texts()
    this_month = rows.nth(11).inner_text()
    assert "%" in this_month  # the boards have been up this month
    looks_right(page, "technician-availability", site, size)


def test_a_technician_adds_and_renames_a_village(site: Site, page: Any,
                                                 size: dict[str, int]) -> None:
    name = f"Thôn Bãi Sậy {size['width']}"
    vid = f"{COMMUNE}-bai-say-{size['width']}"
    login(page, site, "kythuat")
    page.click("nav.tabs a:has-text('Mạng lưới')")
    try:
        page.get_by_label("Tên thôn", exact=True).fill(name)
        page.get_by_label("Vĩ độ (không bắt buộc)").fill("21.3401")
        page.get_by_label("Kinh độ (không bắt buộc)").fill("105.5702")
        page.click("#villages button:has-text('Thêm thôn')")
        page.wait_for_selector(f"text=Đã thêm {name}.")
        mine = {a["id"]: a for a in site.admin.get("/api/v1/areas")}[vid]
        assert (mine["name"], mine["kind"], mine["parent_id"], mine["lat"]) == (
            name, "village", COMMUNE, 21.3401)
        field = page.get_by_label(f"Tên thôn {vid}")  # listed: the console reloaded its areas
        field.fill(name + " mới")
        page.locator("#villages li", has=field).locator("button:has-text('Đổi tên')").click()
        page.wait_for_selector(f"text=Đã đổi tên thành {name} mới.")
        assert field.input_value() == name + " mới"
        looks_right(page, "technician-villages", site, size)
        assert {a["id"]: a for a in site.admin.get("/api/v1/areas")}[vid]["name"] == name + " mới"
    finally:
        site.admin.call("DELETE", f"/api/v1/areas/{vid}")
