"""A technician's view: each injected fault shows as the right state and alert, remote
actions are acknowledged, bad telemetry is dropped and counted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key
from paho.mqtt.enums import CallbackAPIVersion

from devices.areas import Network, load_fixture
from tests.integration.harness import SimThread, make_settings, running_controller, seed
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
HEARTBEAT = 1.0
COMMUNE = "vn-vp-tamduong-huongdao"
HOLD_S = 3


@dataclass
class Hooks:
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Site:
    api: TestClient
    sim: SimThread
    net: Network
    broker: Broker
    hooks: Hooks


@pytest.fixture(scope="module")
def site(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    hooks = Hooks()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hooks.events.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("technician")
    net = load_fixture("huong-dao")
    settings = make_settings(tmp, broker, alert_webhooks=[
        f"http://127.0.0.1:{server.server_address[1]}/hook"])
    seed(settings, net)
    with running_controller(settings) as api:
        r = api.put(f"/api/v1/areas/{COMMUNE}/thresholds", json={"resolve_hold_s": HOLD_S})
        assert r.status_code == 200, r.text
        cfg = SimConfig(port=broker.port, heartbeat_s=HEARTBEAT, reconnect_min_s=0.05,
                        reconnect_max_s=0.2, keys=[load_verify_key(tmp / "controller_ed25519.pub")])
        sim = SimThread(net, cfg).start()
        wait_for(lambda: all(c["state"] == "online" for c in api.get("/api/v1/clusters").json()),
                 20, "15 clusters online")
        yield Site(api, sim, net, broker, hooks)
        sim.stop()
    server.shutdown()
    server.server_close()


def cluster(site: Site, cid: str) -> dict[str, Any]:
    return site.api.get(f"/api/v1/clusters/{cid}").json()  # type: ignore[no-any-return]


def alerts(site: Site, cid: str | None = None, code: str | None = None,
           status: str = "all") -> list[dict[str, Any]]:
    params = {"status": status, **({"cluster_id": cid} if cid else {}),
              **({"code": code} if code else {})}
    return site.api.get("/api/v1/alerts", params=params).json()  # type: ignore[no-any-return]


def inject(site: Site, cid: str, fault: str, **params: Any) -> None:
    site.sim.call(lambda: site.sim.by_id(cid).inject(fault, params))


def clear(site: Site, cid: str, fault: str) -> None:
    site.sim.call(lambda: site.sim.by_id(cid).clear(fault))


def action(site: Site, cid: str, kind: str, timeout: float = 15, **params: Any) -> dict[str, Any]:
    r = site.api.post(f"/api/v1/clusters/{cid}/actions", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    aid = r.json()["id"]
    return wait_for(lambda: (a := site.api.get(f"/api/v1/actions/{aid}").json())["results"][0]
                    ["state"] in ("done", "failed", "refused", "timed_out") and a, timeout,
                    f"{kind} outcome")  # type: ignore[no-any-return]


def test_power_cut_goes_offline_alerts_and_recovers(site: Site) -> None:
    cid = "hd-c03"
    inject(site, cid, "power_cut")
    t0 = time.monotonic()
    wait_for(lambda: cluster(site, cid)["state"] == "offline", 3 * HEARTBEAT, "offline")
    assert time.monotonic() - t0 <= 1.5 * HEARTBEAT
    opened = wait_for(lambda: alerts(site, cid, "offline", "open"), 5, "offline alert")
    assert "last will" in opened[0]["message"]
    wait_for(lambda: any(e["event"] == "opened" and e["alert"]["cluster_id"] == cid
                         for e in site.hooks.events), 5, "webhook for the opened alert")
    clear(site, cid, "power_cut")
    wait_for(lambda: cluster(site, cid)["state"] == "online", 10, "back online")
    resolved = wait_for(lambda: [a for a in alerts(site, cid, "offline")
                                 if a["id"] == opened[0]["id"] and a["status"] == "resolved"],
                        HOLD_S + 5, "offline alert resolved after the hold")
    assert resolved
    wait_for(lambda: any(e["event"] == "resolved" and e["alert"]["id"] == opened[0]["id"]
                         for e in site.hooks.events), 5, "webhook for the resolution")


def test_blown_speaker_is_degraded_naming_it_within_one_heartbeat(site: Site) -> None:
    cid = "hd-c05"
    inject(site, cid, "blown_speaker", index=2)
    t0 = time.monotonic()
    c = wait_for(lambda: (c := cluster(site, cid))["state"] == "degraded" and c, 3 * HEARTBEAT,
                 "degraded")
    took = time.monotonic() - t0
    assert took <= HEARTBEAT + 0.5, took
    assert c["causes"] == [{"code": "speaker_open", "subject": "2",
                            "message": "speaker 2: open circuit (blown horn or cut line)"}]
    assert [s["state"] for s in c["speakers"]] == ["ok", "open"]
    [alert] = alerts(site, cid, "speaker_open", "open")
    assert alert["subject"] == "2" and alert["severity"] == "critical"
    # the technician acknowledges it; it stays open until the horn is replaced
    acked = site.api.post(f"/api/v1/alerts/{alert['id']}/ack").json()
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "admin"


def test_self_test_reports_exactly_the_blown_horn(site: Site) -> None:
    cid = "hd-c07"
    inject(site, cid, "blown_speaker", index=1)
    a = action(site, cid, "self_test")
    r = a["results"][0]
    assert r["state"] == "done", r
    assert r["result"]["faulty"] == [1]
    lines = {s["index"]: s for s in r["result"]["speakers"]}
    assert lines[1]["state"] == "open" and lines[1]["level_db"] == 0
    assert lines[2]["state"] == "ok" and 90 < lines[2]["level_db"] < 100
    clear(site, cid, "blown_speaker")
    wait_for(lambda: cluster(site, cid)["state"] == "online", 5, "repaired")


def test_overheating_during_long_playback_raises_an_alert(site: Site) -> None:
    cid = "hd-c09"
    inject(site, cid, "overheating", c_per_min=900.0)
    text = "Thông báo dài. " * 12
    content = site.api.post("/api/v1/contents/tts", json={"text": text}).json()
    start = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    r = site.api.post("/api/v1/broadcasts", json={"content_id": content["id"],
                                                 "targets": {"clusters": [cid]}, "start_at": start})
    assert r.status_code == 201, r.text
    [alert] = wait_for(lambda: alerts(site, cid, "amp_overheat", "open"), 25, "overheat alert")
    assert "amplifier at" in alert["message"]
    assert "amp_overheat" in [c["code"] for c in cluster(site, cid)["causes"]]
    clear(site, cid, "overheating")


def test_flapping_link_gives_one_alert_not_fifty(site: Site) -> None:
    cid = "hd-c11"
    before = len(alerts(site, cid, "offline"))
    drops_before = site.sim.call(lambda: site.sim.by_id(cid).bd_seq)
    inject(site, cid, "flapping", period_s=0.35, down_s=0.1)
    wait_for(lambda: site.sim.call(lambda: site.sim.by_id(cid).bd_seq) - drops_before >= 50,
             60, "50 link drops", every=0.5)
    clear(site, cid, "flapping")
    offline = alerts(site, cid, "offline")
    assert len(offline) - before == 1, offline
    assert offline[0]["flaps"] >= 20  # the drops the controller saw while it was open
    wait_for(lambda: cluster(site, cid)["state"] == "online", 10, "stable again")
    wait_for(lambda: alerts(site, cid, "offline")[0]["status"] == "resolved", HOLD_S + 5,
             "resolved once stable")


def test_battery_drains_during_a_power_cut_then_the_board_dies(site: Site) -> None:
    cid = "hd-c12"
    inject(site, cid, "power_cut", battery=True, drain_pct_per_min=900.0)
    c = wait_for(lambda: (c := cluster(site, cid))["state"] == "degraded" and c, 5, "on battery")
    assert "on_battery" in [x["code"] for x in c["causes"]]
    wait_for(lambda: alerts(site, cid, "battery_low", "open"), 10, "battery low alert")
    wait_for(lambda: cluster(site, cid)["state"] == "offline", 15, "dead battery: offline")
    clear(site, cid, "power_cut")
    wait_for(lambda: cluster(site, cid)["state"] == "online", 10, "mains back")


@pytest.mark.parametrize("fault,params,code", [
    ("clock_drift", {"ms_per_min": 60_000.0}, "clock_drift"),
    ("fading_signal", {"db_per_min": 300.0}, "weak_signal"),
])
def test_drifting_clock_and_fading_signal_are_named(site: Site, fault: str,
                                                    params: dict[str, float], code: str) -> None:
    cid = "hd-c13"
    inject(site, cid, fault, **params)
    wait_for(lambda: code in [x["code"] for x in cluster(site, cid)["causes"] or []], 10, code)
    assert alerts(site, cid, code, "open")
    clear(site, cid, fault)
    wait_for(lambda: code not in [x["code"] for x in cluster(site, cid)["causes"] or []], 10,
             f"{code} cleared")


def test_reboot_loop_shows_in_uptime_and_births(site: Site) -> None:
    cid = "hd-c14"
    bd = cluster(site, cid)["telemetry"]["bd_seq"]
    inject(site, cid, "reboot_loop", period_s=2.0)
    wait_for(lambda: cluster(site, cid)["telemetry"]["bd_seq"] >= bd + 2, 20, "two reboots")
    clear(site, cid, "reboot_loop")
    wait_for(lambda: cluster(site, cid)["state"] == "online", 10, "stable")
    assert cluster(site, cid)["telemetry"]["uptime_s"] < 10


def test_remote_actions_are_acknowledged_and_visible(site: Site) -> None:
    cid = "hd-c15"
    a = action(site, cid, "set_volume", volume_pct=35)
    assert a["results"][0]["state"] == "done" and a["results"][0]["result"] == {"volume_pct": 35}
    wait_for(lambda: cluster(site, cid)["telemetry"]["volume_pct"] == 35, 5, "volume in telemetry")
    a = action(site, cid, "set_speaker", index=2, muted=True)
    assert a["results"][0]["result"]["state"] == "muted"
    wait_for(lambda: [s["state"] for s in cluster(site, cid)["speakers"]] == ["ok", "muted"], 5,
             "muted speaker visible")
    assert cluster(site, cid)["state"] == "online"  # muting is a choice, not a fault
    action(site, cid, "set_speaker", index=2, muted=False)
    a = action(site, cid, "set_heartbeat", heartbeat_s=5)
    assert a["results"][0]["state"] == "done"
    rt = site.api.app.state.runtime  # type: ignore[attr-defined]
    wait_for(lambda: rt.health.views[cid].heartbeat_s == 5, 5, "controller using the new interval")
    a = action(site, cid, "report_now")
    assert a["results"][0]["state"] == "done"
    bd = cluster(site, cid)["telemetry"]["bd_seq"]
    a = action(site, cid, "reboot", timeout=20)
    assert a["results"][0]["state"] == "done"
    wait_for(lambda: cluster(site, cid)["telemetry"]["bd_seq"] > bd, 10, "a new connection")
    bad = site.api.post(f"/api/v1/clusters/{cid}/actions",
                        json={"kind": "set_volume", "params": {"volume_pct": 250}})
    assert bad.status_code == 422 and "volume_pct" in bad.text


def test_area_wide_volume_is_one_publish_acknowledged_by_each_cluster(site: Site) -> None:
    r = site.api.post("/api/v1/areas/hd-v01/actions",
                      json={"kind": "set_volume", "params": {"volume_pct": 60}})
    assert r.status_code == 202
    aid = r.json()["id"]
    assert len({x["cluster_id"] for x in r.json()["results"]}) == 2
    last: dict[str, Any] = {}

    def both_done() -> dict[str, Any] | None:
        last.update(site.api.get(f"/api/v1/actions/{aid}").json())
        return last if last["summary"] == {"done": 2} else None

    try:
        done = wait_for(both_done, 10, "both clusters done")
    except AssertionError as exc:
        acks = {c: [(a.command_id[:8], a.status) for a in site.sim.by_id(c).acks[-3:]]
                for c in ("hd-c01", "hd-c02")}
        raise AssertionError(f"{exc}: {last['results']} sim acks: {acks}") from None
    assert {x["cluster_id"] for x in done["results"]} == {"hd-c01", "hd-c02"}


def _publish_raw(port: int, msgs: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
    c.connect("127.0.0.1", port)
    c.loop_start()
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_malformed_telemetry_is_dropped_and_counted_and_unknown_devices_alert(site: Site) -> None:
    import random

    rt = site.api.app.state.runtime  # type: ignore[attr-defined]
    rejected_before = sum(rt.ingest.rejected.values())
    good = wait_for(lambda: cluster(site, "hd-c04")["telemetry"], 10, "a heartbeat stored")
    rng = random.Random(7)
    valid = json.dumps({**good, "v": 1, "cluster_id": "hd-c04"})
    msgs: list[tuple[str, bytes]] = []
    for _ in range(150):  # fuzzed JSON: mutate one character
        i = rng.randrange(len(valid))
        msgs.append(("loa/v1/cluster/hd-c04/telemetry",
                     (valid[:i] + rng.choice('{}[]",:0aZ\x00') + valid[i + 1:]).encode()))
    msgs += [
        ("loa/v1/cluster/hd-c04/telemetry", json.dumps({**json.loads(valid), "seq": "x"}).encode()),
        ("loa/v1/cluster/hd-c04/telemetry", json.dumps({**json.loads(valid), "amp_temp_c": 1e9}).encode()),
        ("loa/v1/cluster/hd-c04/telemetry", b"\xff" * 300_000),  # huge
        ("loa/v1/cluster/hd-c04/telemetry", json.dumps({**json.loads(valid), "cluster_id": "hd-c05"}).encode()),
        ("loa/v1/cluster/hd-c04/event", b'{"v":1,"kind":"delivery"}'),
        ("loa/v1/cluster/hd-c04/status", b"[]"),
        ("loa/v1/cluster/NOT_AN_ID/telemetry", valid.encode()),
    ]
    stranger = json.dumps({**json.loads(valid), "cluster_id": "intruder-01"})
    msgs.append(("loa/v1/cluster/intruder-01/telemetry", stranger.encode()))
    _publish_raw(site.broker.port, msgs)
    wait_for(lambda: sum(rt.ingest.rejected.values()) - rejected_before >= 100, 10,
             "rejections counted")
    assert rt.ingest._thread.is_alive()
    c4 = cluster(site, "hd-c04")
    assert c4["state"] == "online" and c4["telemetry"]["amp_temp_c"] < 150
    assert cluster(site, "hd-c05")["id"] == "hd-c05"
    [a] = wait_for(lambda: alerts(site, "intruder-01", "unprovisioned", "open"), 5,
                   "unprovisioned alert")
    assert "intruder-01" in a["message"]
    metrics = site.api.get("/metrics").text
    assert 'loa_mqtt_messages_rejected_total{reason="invalid"}' in metrics
    assert 'loa_clusters{state="unprovisioned"} 1.0' in metrics
    assert TestClient(site.api.app).get("/metrics").status_code == 401


def test_a_message_that_trips_a_bug_is_dropped_alone(site: Site,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is one transaction; a message that makes the controller fail must not take
    the messages that arrived with it down too."""
    rt = site.api.app.state.runtime  # type: ignore[attr-defined]
    on_delivery = rt.dispatcher.on_delivery

    def buggy(db: Any, ev: Any) -> None:
        if ev.occurrence_id == "poison":
            raise RuntimeError("a bug in handling this report")
        on_delivery(db, ev)

    monkeypatch.setattr(rt.dispatcher, "on_delivery", buggy)
    errors_before = rt.ingest.rejected["error"]
    good = wait_for(lambda: cluster(site, "hd-c08")["telemetry"], 10, "a heartbeat stored")
    hot = {**good, "v": 1, "cluster_id": "hd-c08", "amp_temp_c": 97.0, "seq": 10**6}
    now = datetime.now(UTC).isoformat()
    poison = {"v": 1, "kind": "delivery", "cluster_id": "hd-c09", "seq": 10**6, "ts": now,
              "occurrence_id": "poison", "state": "playing", "at": now}
    # one burst: they reach the controller together, so they share an ingest batch
    _publish_raw(site.broker.port, [("loa/v1/cluster/hd-c09/event", json.dumps(poison).encode()),
                                    ("loa/v1/cluster/hd-c08/telemetry", json.dumps(hot).encode())])
    wait_for(lambda: rt.ingest.rejected["error"] > errors_before, 10, "the failure counted")
    assert rt.ingest.rejected["error"] == errors_before + 1
    # the overheating heartbeat that shared its batch was applied: an alert, in the database
    [a] = wait_for(lambda: alerts(site, "hd-c08", "amp_overheat"), 5, "overheat alert")
    assert "97" in a["message"]
    assert rt.ingest._thread.is_alive()


def test_readiness_names_who_will_not_play_the_next_slot(site: Site) -> None:
    cid = "hd-c06"
    inject(site, cid, "power_cut")
    wait_for(lambda: cluster(site, cid)["state"] == "offline", 5, "offline")
    content = site.api.post("/api/v1/contents/tts", json={"text": "Họp dân."}).json()
    start = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    bc = site.api.post("/api/v1/broadcasts", json={
        "content_id": content["id"], "targets": {"areas": [COMMUNE]}, "start_at": start,
        "title": "Họp dân"}).json()
    r = site.api.get(f"/api/v1/broadcasts/{bc['id']}/readiness").json()
    assert r["targeted"] == 15
    not_ready = [c for c in r["clusters"] if not c["will_play"]]
    assert [c["cluster_id"] for c in not_ready] == [cid]
    assert "offline" in not_ready[0]["reasons"][0]
    [a] = wait_for(lambda: alerts(site, None, "slot_at_risk", "open"), 15, "slot-at-risk alert")
    assert cid in a["message"] and "Họp dân" in a["message"]
    site.api.post(f"/api/v1/broadcasts/{bc['id']}/cancel")
    clear(site, cid, "power_cut")
    wait_for(lambda: not alerts(site, None, "slot_at_risk", "open"), 15, "risk cleared")


def test_telemetry_history_is_served_for_charts(site: Site) -> None:
    rt = site.api.app.state.runtime  # type: ignore[attr-defined]
    time.sleep(2 * HEARTBEAT)  # a few heartbeats into the current bucket
    with rt.sessions() as db:  # close the open buckets now instead of at the minute's end
        rt.ingest.history.flush(db, datetime.now(UTC), force=True)
        db.commit()
    r = site.api.get("/api/v1/clusters/hd-c08/telemetry",
                     params={"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}).json()
    assert r["resolution"] == "1m" and r["points"]
    p = r["points"][-1]
    assert p["n"] >= 1 and -120 < p["rssi_avg"] < 0 and p["amp_temp_max"] >= p["amp_temp_avg"]
    assert site.api.get("/api/v1/clusters/hd-c08/telemetry",
                        params={"resolution": "1h"}).json()["points"]
