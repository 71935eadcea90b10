"""A commune for the console tests: a private Mosquitto, ``loa serve`` as a process, the
simulated boards of xã Hướng Đạo (with their fault-injection channel), and an account per
role. Debian's Chromium driven by Playwright; skipped, saying why, where it is missing
(CI installs it and sets LOA_TEST_REQUIRE_BROWSER, so there it never skips)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.access.keys import public_key_path
from devices.areas import load_fixture
from tests.integration.harness import ControllerProcess, HttpApi, make_settings, seed, sim_process
from tests.utils.broker import Broker, free_port, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
if not HAVE_CHROMIUM and os.environ.get("LOA_TEST_REQUIRE_BROWSER"):
    raise RuntimeError(f"LOA_TEST_REQUIRE_BROWSER is set and there is no Chromium at {CHROMIUM}")

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
COMMUNE = "vn-vp-tamduong-huongdao"
PASSWORD = "Hướng-Đạo-2026-console"
ACCOUNTS = {"canbo": "officer", "lanhdao": "leader", "kythuat": "technician"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_CHROMIUM:
        return
    skip = pytest.mark.skip(reason="the console tests need Debian's chromium (apt-get install "
                                   "chromium); .ci/run installs it")
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@dataclass
class Site:
    base: str
    admin: HttpApi
    control: str
    shots: Path
    #: what each simulated board played (``--record-dir``)
    played: Path | None = None

    def fault(self, cluster: str, fault: str, **params: Any) -> None:
        body = json.dumps(params).encode()
        req = urllib.request.Request(f"{self.control}/clusters/{cluster}/faults/{fault}",
                                     data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()


def _stop(sim: subprocess.Popen[bytes] | None, ctl: ControllerProcess, broker: Broker) -> None:
    if sim is not None:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    ctl.kill()
    broker.kill()


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console-site")
    broker = Broker(tmp).start()
    settings = make_settings(tmp, broker)
    seed(settings, load_fixture("huong-dao"))
    ctl = ControllerProcess(settings).start()
    control_port = free_port()
    sim: subprocess.Popen[bytes] | None = None
    try:
        admin = HttpApi(ctl.base).login()
        wait_for(lambda: public_key_path(tmp).exists(), 20, "the controller's public key")
        sim = sim_process(broker, public_key_path(tmp), 2.0, "--fixture", "huong-dao",
                          "--control", f"127.0.0.1:{control_port}",
                          "--record-dir", str(tmp / "played"), "--clock-sync", "5",
                          log=tmp / "sim.log")
        wait_for(lambda: sum(c["state"] == "online" for c in admin.get("/api/v1/clusters"))
                 == 15, 40, "every board online")
        for user, role in ACCOUNTS.items():
            status, body = admin.post("/api/v1/users", {"username": user, "password": PASSWORD,
                                                        "role": role, "area_id": COMMUNE})
            assert status == 201, body
        shots = Path(os.environ.get("LOA_TEST_SCREENSHOTS", tmp / "screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        yield Site(ctl.base, admin, f"http://127.0.0.1:{control_port}", shots, tmp / "played")
    finally:
        _stop(sim, ctl, broker)


@pytest.fixture(params=[PHONE, DESKTOP], ids=["phone", "desktop"])
def size(request: pytest.FixtureRequest) -> dict[str, int]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture()
def page(browser: Any, size: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(viewport=size, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh")
    p = context.new_page()
    p.set_default_timeout(15000)
    yield p
    context.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="package")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A synthetic province of three communes (two boards each) and a leader of the
    province ("tinh")."""
    from devices.areas import generate

    tmp = tmp_path_factory.mktemp("console-province")
    broker = Broker(tmp).start()
    settings = make_settings(tmp, broker)
    seed(settings, generate(3, 2))
    ctl = ControllerProcess(settings).start()
    sim: subprocess.Popen[bytes] | None = None
    try:
        admin = HttpApi(ctl.base).login()
        wait_for(lambda: public_key_path(tmp).exists(), 20, "the controller's public key")
        sim = sim_process(broker, public_key_path(tmp), 2.0, "--communes", "3",
                          "--clusters-per-commune", "2", log=tmp / "sim.log")
        wait_for(lambda: sum(c["state"] == "online" for c in admin.get("/api/v1/clusters"))
                 == 6, 40, "every board online")
        status, body = admin.post("/api/v1/users", {"username": "tinh", "password": PASSWORD,
                                                    "role": "leader", "area_id": "gen-p"})
        assert status == 201, body
        shots = Path(os.environ.get("LOA_TEST_SCREENSHOTS", tmp / "screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        yield Site(ctl.base, admin, "", shots)
    finally:
        _stop(sim, ctl, broker)
