"""Live sound and relays (protocol §6.1): a marked sound put into a live voice and into a
relayed radio at known times, found again in what every simulated board played (its Opus
packets, decoded, and when it aimed to play each batch, in true time).

For each fleet size: mouth-to-speaker latency of the live voice (p50, p95), the relay's
error against its schedule, the skew between boards (p99 over the marks), gaps, and the
controller's CPU per second of stream; beside the bare broker carrying batches of the same
size and rate from a bare publisher to as many bare subscribers (``bench.bare_stream``,
its own process), measured in the same run. The controller runs in this process (its CPU is
this process's, less the HTTP client's share); the simulator in its own processes. Both are
sent as emergencies to the whole province (a national admin's non-emergency would be handed
down to the communes' inboxes).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bench.common import Mosquitto
from controller.app import create_app
from controller.db.models import Cluster, Delivery
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.settings import Settings
from devices.areas import generate
from tests.integration.test_stream import heard, mark_times, pcm_with_marks
from tests.utils.radio import RATE, on_air

LIVE_MARKS = [1.0, 3.0, 5.0]
RELAY_MARKS = [2.0, 5.0]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def cpu() -> float:
    return time.process_time()


def played_all(api: TestClient, bid: str, n: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    b: dict[str, Any] = {}
    while time.monotonic() < deadline:
        b = api.get(f"/api/v1/broadcasts/{bid}").json()
        final = [d for d in b["deliveries"] if d["state"] in ("played", "failed", "cancelled")]
        if len(final) == n:
            break
        time.sleep(0.5)
    return b


def figures(record: Path, b: dict[str, Any], sent: list[float]) -> dict[str, float]:
    occ = b["occurrences"][0]["id"]
    got = heard(record, occ)
    lat: list[float] = []
    per_mark: list[list[float]] = [[] for _ in sent]
    missing = 0
    for cid, batches in got.items():
        at = mark_times(record, cid, occ, batches)
        if len(at) != len(sent):
            missing += 1
            continue
        for i, (a, s) in enumerate(zip(at, sent, strict=True)):
            lat.append(a - s)
            per_mark[i].append(a)
    skews = [max(m) - min(m) for m in per_mark if m]
    stats = [d.get("stream") or {} for d in b["deliveries"]]
    return {"boards": len(got), "boards_missing_marks": missing,
            "latency_p50_s": pct(lat, 0.5), "latency_p95_s": pct(lat, 0.95),
            "skew_p99_ms": pct(skews, 0.99) * 1000,
            "gaps": sum(s.get("gaps", 0) for s in stats),
            "played": sum(d["state"] == "played" for d in b["deliveries"])}


def bare(port: int, n: int, seconds: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.bare_stream", str(port), str(n),
                          str(seconds)], check=True, capture_output=True, text=True,
                         timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(communes: int, per: int, processes: int) -> dict[str, Any]:
    broker = Mosquitto()
    work = Path(tempfile.mkdtemp(prefix="loa-bench-live-"))
    record = work / "played"
    sim = None
    result: dict[str, Any] = {"clusters": communes * per}
    try:
        net = generate(communes, per)
        province = next(a.id for a in net.areas.values() if a.parent_id is None)
        settings = Settings(data_dir=work, mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
                            admin_password="bench-pass", chime=False)
        upgrade(settings.db_url)
        engine = make_engine(settings.db_url)
        with make_sessionmaker(engine)() as db:
            register_network(db, net)
        engine.dispose()
        n = len(net.clusters)
        with TestClient(create_app(settings)) as api:
            r = api.post("/api/v1/auth/token", data={"username": "admin", "password": "bench-pass"})
            api.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            rt = api.app.state.runtime  # type: ignore[attr-defined]
            sim = subprocess.Popen(
                [sys.executable, "-m", "firmware_sim", "--communes", str(communes),
                 "--clusters-per-commune", str(per), "--mqtt", settings.mqtt_url or "",
                 "--pubkey", str(work / "controller_ed25519.pub"), "--heartbeat", "60",
                 "--record-dir", str(record), "--clock-sync", "5",
                 "--connect-spread", str(max(2.0, n / 300)), "--processes", str(processes)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                with rt.sessions() as db:
                    if db.scalar(select(func.count()).select_from(Cluster)
                                 .where(Cluster.state == "online")) == n:
                        break
                time.sleep(0.5)
            time.sleep(12)  # the boards' clock exchanges after their connect burst

            # live: an emergency from the province, a voice with three marks
            live = api.post("/api/v1/live", json={"targets": {"areas": [province]},
                                                  "priority": "emergency"}).json()
            begin = datetime.fromisoformat(live["start_at"]).timestamp() - live["latency_ms"] / 1e3
            path = live["ingest_url"].split("://", 1)[1].split("/", 1)[1]
            pcm = pcm_with_marks(6.5, LIVE_MARKS)
            chunk = RATE * 2 // 50
            with api.websocket_connect("/" + path + "&format=pcm") as ws:
                while time.time() < begin:
                    time.sleep(0.005)
                t0, c0 = time.time(), cpu()
                for i in range(0, len(pcm), chunk):
                    ws.send_bytes(pcm[i:i + chunk])
                    delay = t0 + (i + chunk) / (RATE * 2) - time.time()
                    if delay > 0:
                        time.sleep(delay)
                c1 = cpu()
                ws.send_text("stop")
            b = played_all(api, live["broadcast_id"], n, 60)
            result["live"] = figures(record, b, [t0 + m for m in LIVE_MARKS])
            result["live"]["controller_cpu_per_s"] = (c1 - c0) / (len(pcm) / (RATE * 2))

            # relay: a radio with two marks, from a slot 5 s ahead, for 10 s
            with on_air(work, 30.0, RELAY_MARKS) as radio:
                result["relay"] = _relay(api, radio, province, n, record)
            with rt.sessions() as db:  # (every delivery accounted for)
                result["deliveries"] = db.scalar(select(func.count()).select_from(Delivery))
        _stop(sim)
        sim = None
        result["bare"] = bare(broker.port, n, 5.0)
    finally:
        if sim is not None:
            _stop(sim)
        broker.stop()
    return result


def _relay(api: TestClient, radio: Any, province: str, n: int, record: Path) -> dict[str, Any]:
    """A relay of ``radio`` from a slot 5 s ahead, for 10 s."""
    start = datetime.now(UTC) + timedelta(seconds=5)
    relay = api.post("/api/v1/broadcasts", json={
        "source": {"kind": "relay", "url": radio.url("r")}, "duration_s": 10,
        "priority": "emergency", "targets": {"areas": [province]},
        "start_at": start.isoformat()}).json()
    if "id" not in relay:
        raise SystemExit(f"the relay was refused: {relay}")
    time.sleep(max(0.0, start.timestamp() - time.time()))
    c0 = cpu()
    time.sleep(10)
    c1 = cpu()
    out = figures(record, played_all(api, relay["id"], n, 60),
                  [start.timestamp() + m for m in RELAY_MARKS])
    out["controller_cpu_per_s"] = (c1 - c0) / 10
    return out


def _stop(sim: subprocess.Popen[bytes]) -> None:
    sim.terminate()
    try:
        sim.wait(30)
    except subprocess.TimeoutExpired:
        sim.kill()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench live")
    p.add_argument("--sizes", default="1x15,40x15", help="communes x clusters per commune")
    p.add_argument("--processes", type=int, default=2, help="simulator processes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print("live sound and relays (protocol §6.1): marks found in what each board played")
    for size in args.sizes.split(","):
        communes, per = (int(x) for x in size.split("x"))
        r = run(communes, per, args.processes)
        lv, rl, br = r["live"], r["relay"], r["bare"]
        print(f"\n{r['clusters']} clusters")
        print(f"  live voice: mouth to speaker p50 {lv['latency_p50_s'] * 1000:.0f} ms, "
              f"p95 {lv['latency_p95_s'] * 1000:.0f} ms; skew p99 {lv['skew_p99_ms']:.2f} ms; "
              f"gaps {lv['gaps']}; played {lv['played']}/{r['clusters']} "
              f"(marks missing on {lv['boards_missing_marks']}); controller CPU "
              f"{lv['controller_cpu_per_s'] * 100:.1f} % of a core")
        print(f"  relay: against its schedule p50 {rl['latency_p50_s'] * 1000:.1f} ms, p95 "
              f"{rl['latency_p95_s'] * 1000:.1f} ms; skew p99 {rl['skew_p99_ms']:.2f} ms; "
              f"gaps {rl['gaps']}; played {rl['played']}/{r['clusters']}; controller CPU "
              f"{rl['controller_cpu_per_s'] * 100:.1f} % of a core")
        print(f"  bare broker, same batches to {r['clusters']} bare subscribers: latency p50 "
              f"{br['latency_p50_ms']:.1f} ms, p95 {br['latency_p95_ms']:.1f} ms; arrival "
              f"skew p99 {br['skew_p99_ms']:.1f} ms")
        print(f"  ratio: boards' play skew / bare arrival skew (p99) = "
              f"{lv['skew_p99_ms'] / max(br['skew_p99_ms'], 1e-3):.3f}")


if __name__ == "__main__":
    main()
