"""The console in a real browser (Debian's Chromium driven by Playwright), at phone size:
logging in and out as a person does, the lockout said in Vietnamese, nothing of a session
left behind after logout. Skipped, saying why, where Chromium is not installed; CI installs
it and sets LOA_TEST_REQUIRE_BROWSER, so there it is never skipped."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.areas import load_fixture
from tests.integration.harness import ADMIN_PASSWORD, ControllerProcess, make_settings, seed
from tests.utils.broker import Broker

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.integration

if not os.path.exists(CHROMIUM):
    if os.environ.get("LOA_TEST_REQUIRE_BROWSER"):
        raise RuntimeError(f"LOA_TEST_REQUIRE_BROWSER is set and there is no Chromium at "
                           f"{CHROMIUM}")
    pytest.skip("the console tests need Debian's chromium (apt-get install chromium); "
                ".ci/run installs it", allow_module_level=True)

PHONE = {"width": 390, "height": 844}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("console")
    broker = Broker(tmp).start()
    settings = make_settings(tmp, broker)
    seed(settings, load_fixture("huong-dao"))
    ctl = ControllerProcess(settings).start()
    try:
        yield ctl.base
    finally:
        ctl.kill()
        broker.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _login(page: Any, base: str, password: str) -> None:
    page.goto(base + "/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("#loginForm button")


def test_logging_in_and_out_on_a_phone_leaves_nothing_behind(console: str, browser: Any,
                                                             tmp_path: Path) -> None:
    page = browser.new_page(viewport=PHONE)
    page.goto(console + "/")
    assert page.is_visible("#login") and page.is_hidden("#app")  # no dashboard behind it
    _login(page, console, "not-the-password")
    page.wait_for_function("document.querySelector('#loginMsg').textContent.length > 0")
    assert page.inner_text("#loginMsg") == "Sai tài khoản hoặc mật khẩu"
    _login(page, console, ADMIN_PASSWORD)
    page.wait_for_selector("#logoutBtn", state="visible")
    assert page.is_visible("#app") and page.inner_text("#who") == "admin"
    token = page.evaluate("sessionStorage.getItem('loa-token')")
    page.screenshot(path=str(tmp_path / "phone-logged-in.png"))
    page.click("#logoutBtn")
    page.wait_for_selector("#login", state="visible")
    assert page.is_hidden("#app") and page.input_value("input[name=password]") == ""
    assert page.evaluate("sessionStorage.getItem('loa-token')") is None
    req = urllib.request.Request(console + "/api/v1/users/me",
                                 headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as exc:  # ended on the server, not only here
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 401
    page.close()


def test_a_locked_account_is_told_in_vietnamese(console: str, browser: Any) -> None:
    page = browser.new_page(viewport=PHONE)
    for i in range(6):
        _login(page, console, f"guess-number-{i}")
        page.wait_for_function("document.querySelector('#loginMsg').textContent.length > 0")
    assert page.inner_text("#loginMsg").startswith("Tài khoản tạm khóa do nhập sai mật khẩu")
    page.close()
