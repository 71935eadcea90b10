"""Online/offline as a technician sees it, with the simulator as a separate process."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from devices.areas import load_fixture
from tests.integration.harness import make_settings, running_controller, seed, sim_process
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
HEARTBEAT = 2.0


def states(api: TestClient) -> dict[str, str]:
    return {c["id"]: c["state"] for c in api.get("/api/v1/clusters").json()}


@pytest.fixture
def controller(broker: Broker, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, broker)
    seed(settings, load_fixture("huong-dao"))
    with running_controller(settings) as api:
        yield api


def test_killed_simulator_goes_offline_within_one_and_a_half_heartbeats(
        controller: TestClient, broker: Broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    api = controller
    pub = tmp_path / "controller_ed25519.pub"
    sim = sim_process(broker, pub, HEARTBEAT, "--fixture", "huong-dao", log=tmp_path / "sim.log")
    try:
        wait_for(lambda: set(states(api).values()) == {"online"}, 20, "all 15 online")
        sim.send_signal(signal.SIGKILL)
        sim.wait(10)
        t0 = time.monotonic()
        wait_for(lambda: set(states(api).values()) == {"offline"}, 3 * HEARTBEAT,
                 "all 15 offline")
        took = time.monotonic() - t0
        print(f"\ntime to offline after kill -9: {took:.2f} s (heartbeat {HEARTBEAT} s)")
        assert took <= 1.5 * HEARTBEAT
        clusters = api.get("/api/v1/clusters").json()
        assert {c["state_code"] for c in clusters} <= {"last_will", "heartbeat_timeout"}
        assert {c["state_reason"] for c in clusters} <= {"link lost (last will)",
                                                          "heartbeat timeout"}
    finally:
        sim.kill()
        sim.wait()
    # back, this time spread over two simulator processes (each runs every other cluster)
    sim = sim_process(broker, pub, HEARTBEAT, "--fixture", "huong-dao", "--processes", "2",
                      log=tmp_path / "sim.log")
    try:
        wait_for(lambda: set(states(api).values()) == {"online"}, 20, "all 15 back online")
    finally:
        sim.terminate()  # forwarded to both
        sim.wait(10)
    # a clean stop says offline at once
    wait_for(lambda: set(states(api).values()) == {"offline"}, 5, "offline after clean stop")


def test_hung_cluster_goes_offline_by_heartbeat_timeout_though_its_socket_is_open(
        controller: TestClient, broker: Broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    api = controller
    # the fixture's clusters: freeze the process (the TCP connection stays up, no Will)
    sim = sim_process(broker, tmp_path / "controller_ed25519.pub", HEARTBEAT, "--fixture",
                      "huong-dao", log=tmp_path / "sim.log")
    try:
        wait_for(lambda: set(states(api).values()) == {"online"}, 20, "all 15 online")
        sim.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: set(states(api).values()) == {"offline"}, 4 * HEARTBEAT,
                 "hung clusters offline")
        took = time.monotonic() - t0
        assert took <= 1.5 * HEARTBEAT + 1.0  # + the sweep period
        clusters = api.get("/api/v1/clusters").json()
        assert {(c["state_code"], c["state_reason"]) for c in clusters} == {
            ("heartbeat_timeout", "heartbeat timeout")}
        sim.send_signal(signal.SIGCONT)
        wait_for(lambda: set(states(api).values()) == {"online"}, 10, "back online after thaw")
    finally:
        sim.send_signal(signal.SIGCONT)
        sim.kill()
        sim.wait()


def test_unregistered_device_is_listed_as_unprovisioned_and_never_targeted(
        controller: TestClient, broker: Broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    api = controller
    sim = sim_process(broker, tmp_path / "controller_ed25519.pub", HEARTBEAT, "--clusters", "2",
                      log=tmp_path / "sim.log")
    try:
        wait_for(lambda: sum(s == "unprovisioned" for s in states(api).values()) == 2, 15,
                 "two unprovisioned devices listed")
        stranger = next(i for i, s in states(api).items() if s == "unprovisioned")
        content = api.post("/api/v1/contents/tts", json={"text": "Xin chào."}).json()
        r = api.post("/api/v1/broadcasts", json={
            "content_id": content["id"], "targets": {"clusters": [stranger]},
            "start_at": "2099-01-01T05:30:00+07:00"})
        assert r.status_code == 422 and f"unknown cluster(s): {stranger}" in r.text
    finally:
        sim.kill()
        sim.wait()
