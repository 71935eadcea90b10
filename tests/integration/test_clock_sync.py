"""Clock synchronisation with the controller (protocol §4.5): a board whose oscillator is
10 s ahead and drifting still plays in step with the others, judged by when each board was
heard (true time, from the simulator's record), not by what the boards report; a forged or
replayed time reply moves no clock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from devices import topics
from devices.clock import TimeRequest, sign_reply
from tests.integration.harness import HttpApi, SimThread, hd_with_sim
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
COMMUNE = "vn-vp-tamduong-huongdao"


@pytest.fixture
def commune(broker: Broker, tmp_path: Path) -> Iterator[tuple[HttpApi, SimThread]]:
    with hd_with_sim(broker, tmp_path, clock_sync_s=2.0) as (api, sim, _ctl):
        yield api, sim


def _heard(record: Path, occurrence: str) -> dict[str, datetime]:
    out = {}
    for folder in record.iterdir():
        f = folder / f"{occurrence}.json"
        if f.exists():
            out[folder.name] = datetime.fromisoformat(json.loads(f.read_text())["heard_at"])
    return out


def test_a_board_10_s_off_and_drifting_is_heard_with_the_others(
        commune: tuple[HttpApi, SimThread], tmp_path: Path) -> None:
    api, sim = commune
    off = sim.by_id("hd-c04")
    # 10 s ahead, and running away at 1,000 ppm (a crystal twenty times worse than usual)
    sim.call(lambda: off.inject("clock_drift", {"step_ms": 10_000.0, "ms_per_min": 60.0}))
    # the board learns the controller's clock again within a few exchanges
    wait_for(lambda: abs(sim.call(off.clock_error_ms)) < 5, 20, "hd-c04's clock in step")
    assert off.physics.clock_offset_ms > 9_900  # its oscillator is still 10 s off

    status, content = api.post("/api/v1/contents/tts", {"text": "Thông báo họp thôn."})
    assert status == 201, content
    start = datetime.now(UTC) + timedelta(seconds=6)
    status, bc = api.post("/api/v1/broadcasts", {
        "content_id": content["id"], "targets": {"areas": [COMMUNE]},
        "start_at": start.isoformat()})
    assert status == 201, bc
    def played() -> bool:
        ds = api.get(f"/api/v1/broadcasts/{bc['id']}")["deliveries"]
        return len(ds) == 15 and all(d["state"] == "played" for d in ds)

    wait_for(played, 40, "15 played")
    occ = api.get(f"/api/v1/broadcasts/{bc['id']}")["occurrences"][0]["id"]
    heard = _heard(tmp_path / "played", occ)
    assert len(heard) == 15
    spread_ms = (max(heard.values()) - min(heard.values())).total_seconds() * 1000
    assert spread_ms <= 20, {k: v.isoformat() for k, v in heard.items()}
    assert abs((heard["hd-c04"] - start).total_seconds()) < 0.1
    # and the telemetry says what is true: the disciplined clock's error, not the oscillator's
    wait_for(lambda: abs({c["id"]: c for c in api.get("/api/v1/clusters")}["hd-c04"]
                         ["telemetry"]["clock_offset_ms"]) < 20, 10, "hd-c04 reports ~0 ms")


def _publish(broker: Broker, topic: str, payload: bytes) -> None:
    """As an attacker on the broker would: a plain client, no credentials of the controller."""
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="attacker")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_a_forged_or_replayed_time_reply_moves_no_clock(
        commune: tuple[HttpApi, SimThread], broker: Broker, tmp_path: Path) -> None:
    from controller.access.keys import load_or_create_signing_key

    _api, sim = commune
    board = sim.by_id("hd-c07")
    wait_for(lambda: (board.clock.accuracy_us or 1e9) < 2000, 20, "hd-c07 synced to 2 ms")
    before = sim.call(board.clock_error_ms)
    assert abs(before) < 2 and board.time_replies_ignored == 0
    now_us = time.time_ns() // 1000
    reply_topic = topics.cluster_time_reply("hd-c07")
    # a reply for the request the board is waiting on, 10 s off, signed by a stranger
    stranger = SigningKey.generate()
    seq, t1 = max(board._time_pending.items(), default=(board._time_seq, now_us))
    _publish(broker, reply_topic, sign_reply(stranger, TimeRequest(seq, t1), t1 + 10**7,
                                             t1 + 10**7))
    # a genuine reply captured earlier and replayed: it answers no outstanding request
    key = load_or_create_signing_key(tmp_path)
    _publish(broker, reply_topic, sign_reply(key, TimeRequest(1, now_us - 10**6),
                                             now_us + 10**7, now_us + 10**7))
    wait_for(lambda: board.time_replies_ignored == 2, 10, "both replies refused")
    assert abs(sim.call(board.clock_error_ms) - before) < 2
    assert all(abs(s.offset_us) < 10**6 for s in board.clock.samples)
