"""Emergency fan-out: time from the emergency API call until the last cluster reports
``playing``, beside the raw broker time for the same bytes (the signed command and the
content chunks) from a bare publisher to as many bare subscribers, in the same run.

The simulator runs in its own process (one asyncio task per cluster); the emergency lead
is set to its minimum so the figure measures delivery, not a configured delay.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bench.common import Mosquitto
from controller.app import create_app
from controller.db.models import Cluster, Delivery, Occurrence
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.seed import register_network
from controller.settings import Settings
from devices.areas import generate


async def _bare(port: int, n: int, payloads: list[bytes]) -> float:
    """n subscribers on one topic; time from the first publish to the last byte received."""
    done = 0
    finished = asyncio.Event()
    total = len(payloads)

    async def sub(i: int, ready: asyncio.Event) -> None:
        nonlocal done
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bare-{i}") as c:
            await c.subscribe("bench/fanout/#", qos=1)
            ready.set()
            got = 0
            async for _ in c.messages:
                got += 1
                if got == total:
                    done += 1
                    if done == n:
                        finished.set()
                    return

    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(sub(i, readies[i])) for i in range(n)]
    for r in readies:
        await r.wait()
    async with aiomqtt.Client("127.0.0.1", port, identifier="bare-pub") as pub:
        t0 = time.perf_counter()
        for k, p in enumerate(payloads):
            await pub.publish(f"bench/fanout/{k}", p, qos=1)
        await asyncio.wait_for(finished.wait(), 120)
        elapsed = time.perf_counter() - t0
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


#: Runs in its own process (so it takes no CPU from the controller's process): prints
#: "ready" once subscribed, then the wall-clock time at which the n-th cluster's first
#: ``playing`` report for one occurrence reached the broker's subscribers.
REPORT_WATCHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, n = int(sys.argv[1]), int(sys.argv[2])
seen = {}
def on_message(c, u, m):
    now = time.time()
    try:
        ev = json.loads(m.payload)
    except ValueError:
        return
    if ev.get("kind") != "delivery" or ev.get("state") != "playing":
        return
    got = seen.setdefault(ev.get("occurrence_id"), set())
    got.add(ev.get("cluster_id"))
    if len(got) == n:
        print(f"{now:.6f}", flush=True)
        c.disconnect()
def on_subscribe(c, u, mid, rc, p):
    print("ready", flush=True)
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-report-watch")
c.on_message, c.on_subscribe = on_message, on_subscribe
c.connect("127.0.0.1", port)
c.subscribe("loa/v1/cluster/+/event", qos=1)
c.loop_forever()
"""


def _profiler() -> list[str]:
    """LOA_BENCH_PROFILE_SIM=path.prof runs the simulator under cProfile (where it spends)."""
    out = os.environ.get("LOA_BENCH_PROFILE_SIM")
    return ["-m", "cProfile", "-o", out] if out else []


def run(communes: int, per: int, sim_processes: int = 1) -> tuple[float, float, float, int]:
    broker = Mosquitto()
    work = Path(tempfile.mkdtemp(prefix="loa-bench-em-"))
    sim = None
    try:
        net = generate(communes, per)
        province = next(a.id for a in net.areas.values() if a.parent_id is None)
        settings = Settings(data_dir=work, mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
                            admin_password="bench-pass", emergency_lead_s=0.0, chime=False)
        upgrade(settings.db_url)
        engine = make_engine(settings.db_url)
        with make_sessionmaker(engine)() as db:
            register_network(db, net)
        engine.dispose()
        with TestClient(create_app(settings)) as api:
            r = api.post("/api/v1/auth/token", data={"username": "admin", "password": "bench-pass"})
            api.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            rt = api.app.state.runtime  # type: ignore[attr-defined]
            sim = subprocess.Popen(
                [sys.executable, *_profiler(), "-m", "firmware_sim", "--communes", str(communes),
                 "--clusters-per-commune", str(per), "--mqtt", settings.mqtt_url or "",
                 "--pubkey", str(work / "controller_ed25519.pub"), "--heartbeat", "60",
                 "--connect-spread", str(max(2.0, len(net.clusters) / 300)),
                 "--processes", str(sim_processes)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            n = len(net.clusters)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with rt.sessions() as db:
                    up = db.query(Cluster).filter(Cluster.state == "online").count()
                if up == n:
                    break
                time.sleep(0.5)
            content = api.post("/api/v1/contents/tts", json={
                "text": "Cảnh báo bão khẩn cấp. Người dân ở trong nhà."}).json()
            blob_size = content["size"]
            on_wire: list[float] = []
            watch = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-watch")
            watch.on_message = lambda *_: on_wire.append(time.perf_counter())
            watch.connect("127.0.0.1", broker.port)
            watch.subscribe(f"loa/v1/area/{province}/cmd", qos=0)
            watch.loop_start()
            reports = subprocess.Popen([sys.executable, "-c", REPORT_WATCHER, str(broker.port),
                                        str(n)], stdout=subprocess.PIPE, text=True)
            assert reports.stdout is not None and reports.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            t0 = time.perf_counter()
            t0_wall = datetime.now(UTC)
            prof = cProfile.Profile() if os.environ.get("LOA_BENCH_PROFILE_API") else None
            if prof:
                prof.enable()
            r = api.post("/api/v1/broadcasts", json={
                "content_id": content["id"], "targets": {"areas": [province]},
                "priority": "emergency"})
            if prof:
                prof.disable()
                prof.dump_stats(os.environ["LOA_BENCH_PROFILE_API"])
            assert r.status_code == 201, r.text
            print(f"  the API call returned after {time.perf_counter() - t0:.2f} s; the signed "
                  f"command was on the wire after "
                  f"{(on_wire[0] - t0) if on_wire else float('nan'):.2f} s")
            bid = r.json()["id"]
            ours = float("nan")
            # poll a count (one row, computed inside SQLite), not the rows themselves: the
            # poll runs in the controller's process and must not slow what it measures
            started_q = select(func.count()).select_from(Delivery).join(Occurrence).where(
                Occurrence.broadcast_id == bid, Delivery.started_at.is_not(None))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with rt.sessions() as db:
                    if db.scalar(started_q) >= n:
                        ours = time.perf_counter() - t0
                        break
                time.sleep(0.01)
            try:
                reported = float(reports.communicate(timeout=30)[0].strip()) - \
                    t0_wall.timestamp()
            except (subprocess.TimeoutExpired, ValueError):
                reports.kill()
                reported = float("nan")
            # only now: paho's loop_stop waits out its select (up to 1 s), which the poll
            # above must not include
            watch.loop_stop()
            watch.disconnect()
            with rt.sessions() as db:
                started = db.scalars(select(Delivery.started_at).join(Occurrence).where(
                    Occurrence.broadcast_id == bid)).all()
            played_on = sum(s is not None for s in started)
            if started and all(started):
                lag = sorted((s - t0_wall).total_seconds() for s in started)
                print(f"  clusters' own start times after the call: first {lag[0]:.2f} s, "
                      f"median {lag[len(lag) // 2]:.2f} s, last {lag[-1]:.2f} s")
        # the same bytes through the bare broker path: one command + the content chunks
        chunk = 16 * 1024
        payloads = [b"x" * 700] + [b"\0" * min(chunk, blob_size - i)
                                   for i in range(0, blob_size, chunk)]
        bare = asyncio.run(_bare(broker.port, n, payloads))
        return reported, ours, bare, played_on
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(30)
            except subprocess.TimeoutExpired:  # thousands of clusters may not all stop in
                os.killpg(sim.pid, signal.SIGKILL)  # time: the figures are taken already
                sim.wait(10)
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clusters", type=int, nargs="+", default=[600])
    p.add_argument("--sim-processes", type=int, default=os.cpu_count() or 1,
                   help="simulator processes (default: one per core)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for total in args.clusters:
        communes = max(1, total // 15)
        reported, ours, bare, played = run(communes, 15, args.sim_processes)
        print(f"emergency to {communes * 15} clusters ({communes} communes x 15, "
              f"simulator in {args.sim_processes} process(es)):")
        print(f"  API call -> last cluster reports playing  {reported:7.2f} s   (its report "
              "on the broker)")
        print(f"  API call -> controller has every report   {ours:7.2f} s   ({played} clusters "
              "started; what the officer's report shows)")
        print(f"  bare publisher -> last subscriber         {bare:7.2f} s   (same bytes, same "
              "broker)")
        print(f"  ratio, reports on the broker / bare       {reported / bare:7.2f}   "
              "(target <= 1.5)")
        print(f"  ratio, recorded by the controller / bare  {ours / bare:7.2f}")


if __name__ == "__main__":
    main()
