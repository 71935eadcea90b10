"""xã Hướng Đạo behind an in-process controller on the in-memory link: the API as a user
calls it, the database on SQLite, no broker. For service and API logic; what crosses the
wire is tested in ``tests/integration`` against a real broker and simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from controller.app import create_app
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.runtime import Runtime
from controller.settings import Settings
from controller.transport.memory import MemoryLink
from devices.areas import Network, load_fixture

ADMIN_PASSWORD = "loa-test-admin"


@contextmanager
def memory_commune(tmp: Path, network: Network | None = None,
                   **settings: Any) -> Iterator[tuple[TestClient, MemoryLink]]:
    """An authenticated API client (as admin) and the link it publishes on."""
    s = Settings(data_dir=tmp, admin_password=ADMIN_PASSWORD, chime=False,
                 min_start_lead_s=1.0, **settings)
    upgrade(s.db_url)
    engine = make_engine(s.db_url)
    with make_sessionmaker(engine)() as db:
        register_network(db, network or load_fixture("huong-dao"))
    engine.dispose()
    link = MemoryLink()
    runtime = Runtime.build(s, link=link)
    with TestClient(create_app(s, runtime)) as client:
        r = client.post("/api/v1/auth/token",
                        data={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        yield client, link


def new_account(admin: TestClient, username: str, password: str, role: str,
                area_id: str) -> TestClient:
    """An account created by ``admin`` and an API client logged in as it."""
    r = admin.post("/api/v1/users", json={"username": username, "password": password,
                                          "role": role, "area_id": area_id})
    assert r.status_code == 201, r.text
    client = TestClient(admin.app)
    token = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert token.status_code == 200, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client
