"""Real parts for integration tests: the simulator and the controller, beside the broker
of :mod:`tests.utils.broker`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from firmware_sim.cluster import SimCluster, SimConfig
from firmware_sim.runner import build_clusters, run_clusters

from controller.app import create_app
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.fleet.provisioning import BrokerSync
from controller.settings import Settings
from devices.areas import Network
from devices.provisioning import ProvisioningBundle
from tests.utils.broker import Broker, free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "test-admin-pw"


class SimThread:
    """The firmware simulator in its own thread and event loop (clusters inspectable)."""

    def __init__(self, network: Network, cfg: SimConfig):
        self.clusters: list[SimCluster] = []
        self.network, self.cfg = network, cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="sim")
        self._ready = threading.Event()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.clusters = build_clusters(self.network, self.cfg)
            self._ready.set()
            await run_clusters(self.clusters, self._stop)

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            # (close does not wait for the default executor: a board's blocked connect in
            # a thread must not hold the test up; the thread is a daemon)
            loop.close()

    def start(self) -> SimThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def by_id(self, cluster_id: str) -> SimCluster:
        return next(c for c in self.clusters if c.id == cluster_id)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the simulator's loop and return its result."""
        assert self._loop is not None

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        # (a board blocked in a 3.1.1 connect ends when that connect times out: under a
        # loaded CI machine that has taken more than 15 s)
        self._thread.join(30)
        # a simulator left running would fight the next one over the same client ids
        assert not self._thread.is_alive(), "the simulator did not stop"


def make_settings(tmp: Path, broker: Broker, db_url: str | None = None, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp, "mqtt_url": broker.url, "admin_password": ADMIN_PASSWORD,
        "database_url": db_url, "min_start_lead_s": 1.0, "report_grace_s": 5.0, "chime": False,
    }
    base.update(kw)
    return Settings(**base)


def seed(settings: Settings, network: Network) -> None:
    """The network in the database and, when the settings name a folder for them, the
    broker's password and ACL files written from it (before any broker reads them)."""
    upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    sessions = make_sessionmaker(engine)
    with sessions() as db:
        register_network(db, network)
    if settings.broker_files_dir is not None:
        BrokerSync(settings, sessions).sync()
    engine.dispose()


@contextmanager
def running_controller(settings: Settings) -> Iterator[TestClient]:
    """The controller in-process (real MQTT, real DB), as an authenticated API client."""
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.post("/api/v1/auth/token",
                        data={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client


class ControllerProcess:
    """``loa serve`` as a real process, to kill and restart."""

    def __init__(self, settings: Settings, env_extra: dict[str, str] | None = None,
                 log: Path | None = None, standby: bool = False):
        self.settings = settings
        #: ``loa serve --standby``: it listens only once it is the active controller
        self.standby = standby
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "LOA_DATA_DIR": str(settings.data_dir),
                    "LOA_MQTT_URL": settings.mqtt_url or "", "LOA_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "LOA_MIN_START_LEAD_S": "1", "LOA_REPORT_GRACE_S": "5", "LOA_CHIME": "false",
                    **(env_extra or {})}
        if settings.database_url:
            self.env["LOA_DATABASE_URL"] = settings.database_url
        self.log = log or settings.data_dir / "controller.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ControllerProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "serve", "--port", str(self.port),
                 *(["--standby"] if self.standby else [])],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if not self.standby:
            wait_for(lambda: port_open(self.port), 30, "controller HTTP port")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class HttpApi:
    """A tiny JSON client for a controller running in another process."""

    def __init__(self, base: str):
        self.base = base
        self.token: str | None = None

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> HttpApi:
        import urllib.parse

        body = urllib.parse.urlencode({"username": username, "password": password}).encode()
        self.token = self.call("POST", "/api/v1/auth/token", body,
                                "application/x-www-form-urlencoded")[1]["access_token"]
        return self

    def call(self, method: str, path: str, body: bytes | None = None,
              ctype: str = "application/json") -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, data=body, method=method)
        req.add_header("Content-Type", ctype)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def text(self, path: str) -> str:
        """A plain-text resource (``/metrics``)."""
        import urllib.request

        req = urllib.request.Request(self.base + path)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()  # type: ignore[no-any-return]

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, obj: Any) -> tuple[int, Any]:
        import json

        return self.call("POST", path, json.dumps(obj).encode())


def sim_process(broker: Broker, pubkey: Path, heartbeat: float, *extra: str,
                log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "firmware_sim", "--mqtt", broker.url, "--pubkey", str(pubkey),
             "--heartbeat", str(heartbeat), "--connect-spread", "0", *extra],
            stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
    finally:
        if out is not None:
            out.close()  # the child has its own copy


def issue_bundles(api: TestClient, cluster_ids: Iterable[str]) -> dict[str, ProvisioningBundle]:
    """Each board's credential and bundle, issued through the API (as a technician does)."""
    bundles = {}
    for cid in cluster_ids:
        r = api.post(f"/api/v1/clusters/{cid}/credentials")
        assert r.status_code == 201, r.text
        bundles[cid] = ProvisioningBundle.model_validate(r.json())
    return bundles


@contextmanager
def hd_with_sim(broker: Broker, tmp: Path, clock_sync_s: float
                ) -> Iterator[tuple[HttpApi, SimThread, ControllerProcess]]:
    """xã Hướng Đạo: a controller process and its 15 simulated boards (in a thread, their
    plays recorded in ``tmp/played``), every board online."""
    from firmware_sim.runner import load_verify_key

    from devices.areas import load_fixture

    settings = make_settings(tmp, broker)
    seed(settings, load_fixture("huong-dao"))
    ctl = ControllerProcess(settings).start()
    sim = SimThread(load_fixture("huong-dao"), SimConfig(
        port=broker.port, heartbeat_s=2, clock_sync_s=clock_sync_s,
        keys=[load_verify_key(tmp / "controller_ed25519.pub")],
        record_dir=tmp / "played")).start()
    try:
        api = HttpApi(ctl.base).login()
        wait_for(lambda: all(c["state"] == "online" for c in api.get("/api/v1/clusters")), 30,
                 "15 online")
        yield api, sim, ctl
    finally:
        sim.stop()
        ctl.stop()
