"""Kill the controller between scheduling and start: the broadcast plays once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key

from devices.areas import load_fixture
from tests.integration.harness import ControllerProcess, HttpApi, SimThread, make_settings, seed
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
COMMUNE = "vn-vp-tamduong-huongdao"


@pytest.fixture
def sim_and_controller(broker: Broker, tmp_path, request) -> Iterator[tuple[ControllerProcess, SimThread]]:  # type: ignore[no-untyped-def]
    lead = request.param
    settings = make_settings(tmp_path, broker)
    seed(settings, load_fixture("huong-dao"))
    ctl = ControllerProcess(settings, {"LOA_DISPATCH_LEAD_S": str(lead)}).start()
    sim = SimThread(load_fixture("huong-dao"), SimConfig(
        port=broker.port, heartbeat_s=2, keys=[load_verify_key(tmp_path / "controller_ed25519.pub")],
        record_dir=tmp_path / "played")).start()
    try:
        yield ctl, sim
    finally:
        sim.stop()
        ctl.stop()


@pytest.mark.parametrize("sim_and_controller", [4, 60], indirect=True,
                         ids=["killed-before-dispatch", "killed-after-dispatch"])
def test_controller_killed_before_start_plays_exactly_once(
        sim_and_controller: tuple[ControllerProcess, SimThread], tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl, sim = sim_and_controller
    api = HttpApi(ctl.base).login()
    wait_for(lambda: all(c["state"] == "online" for c in api.get("/api/v1/clusters")), 20,
             "15 online")
    status, content = api.post("/api/v1/contents/tts", {"text": "Thông báo khẩn: mất điện."})
    assert status == 201, content
    start = datetime.now(UTC) + timedelta(seconds=9)
    status, bc = api.post("/api/v1/broadcasts", {
        "content_id": content["id"], "targets": {"areas": [COMMUNE]}, "start_at": start.isoformat()})
    assert status == 201, bc
    time.sleep(0.3)  # let a dispatch at lead 60 s reach the broker before the kill
    ctl.kill()
    time.sleep(2.0)  # down for a while (for lead 4 s, past the planned dispatch time)
    ctl.start()
    api = HttpApi(ctl.base).login()

    def final() -> dict | None:  # type: ignore[type-arg]
        b = api.get(f"/api/v1/broadcasts/{bc['id']}")
        if b["deliveries"] and all(d["state"] == "played" for d in b["deliveries"]):
            return b  # type: ignore[no-any-return]
        return None

    b = wait_for(final, 40, "15 played after the restart", every=0.25)
    assert len(b["occurrences"]) == 1 and len(b["deliveries"]) == 15
    occ = b["occurrence"]["id"]
    for c in sim.clusters:  # each cluster played it once
        mine = [o for o in c.player.occurrences.values() if o.body.broadcast_id == bc["id"]]
        assert [o.id for o in mine] == [occ]
        assert len(list((tmp_path / "played" / c.id).glob("*.ogg"))) == 1
    starts = [datetime.fromisoformat(d["started_at"]) for d in b["deliveries"]]
    assert (max(starts) - min(starts)).total_seconds() <= 0.05
