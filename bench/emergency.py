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
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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


async def _bare(port: int, n: int, per_round: list[list[bytes]]) -> list[float]:
    """n subscribers on one topic tree; per round, the time from the first publish of that
    round's payloads to the last byte received by the last subscriber."""
    rounds = len(per_round)
    totals = [len(p) for p in per_round]
    done = [0] * rounds
    finished = [asyncio.Event() for _ in range(rounds)]

    async def sub(i: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bare-{i}") as c:
            await c.subscribe("bench/fanout/#", qos=1)
            ready.set()
            got = [0] * rounds
            async for m in c.messages:
                r = int(m.topic.value.split("/")[2])
                got[r] += 1
                if got[r] == totals[r]:
                    done[r] += 1
                    if done[r] == n:
                        finished[r].set()
                    if r == rounds - 1:
                        return

    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(sub(i, readies[i])) for i in range(n)]
    for ev in readies:
        await ev.wait()
    times = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="bare-pub") as pub:
        for r in range(rounds):
            await asyncio.sleep(0.5)
            t0 = time.perf_counter()
            for k, p in enumerate(per_round[r]):
                await pub.publish(f"bench/fanout/{r}/{k}", p, qos=1)
            await asyncio.wait_for(finished[r].wait(), 120)
            times.append(time.perf_counter() - t0)
    await asyncio.gather(*tasks, return_exceptions=True)
    return times


#: Runs in its own process (so it takes no CPU from the controller's process): prints
#: "ready" once subscribed, then for each occurrence the wall-clock time at which the n-th
#: cluster's first ``playing`` report for it reached the broker's subscribers.
REPORT_WATCHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, n = int(sys.argv[1]), int(sys.argv[2])
seen = {}
def on_message(c, u, m):
    now = time.time()
    if b'"playing"' not in m.payload:  # (cheap: most events are not the one counted)
        return
    try:
        ev = json.loads(m.payload)
    except ValueError:
        return
    if ev.get("kind") != "delivery" or ev.get("state") != "playing":
        return
    got = seen.setdefault(ev.get("occurrence_id"), set())
    if len(got) < n:
        got.add(ev.get("cluster_id"))
        if len(got) == n:
            print(f"{ev.get('occurrence_id')} {now:.6f}", flush=True)
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


@dataclass
class Round:
    wire: float  # API call -> the command seen on the broker (by a watcher in this process)
    returned: float  # API call -> its response
    reported: float  # API call -> the last cluster's playing report on the broker
    ours: float  # API call -> the controller has every cluster's start recorded (polled
    #              from when the last report is on the broker, so never earlier than that)
    started: int  # clusters whose start the controller recorded
    lag: list[float]  # the clusters' own start times after the call, sorted
    chunks: int  # content chunks the controller published (pushed, or asked for again)


#: bare fan-outs per round; the round is compared with their median
BARE_REPEATS = 3

TEXTS = ["Cảnh báo bão khẩn cấp. Người dân ở trong nhà.",
         "Cảnh báo lũ quét. Người dân ven suối di chuyển lên cao.",
         "Cảnh báo sạt lở đất. Không đi qua vùng đồi núi.",
         "Cảnh báo mưa đá. Che chắn mái nhà và chuồng trại.",
         "Cảnh báo rét đậu. Giữ ấm cho người già và trẻ nhỏ."]


def run(communes: int, per: int, sim_processes: int, rounds: int) -> tuple[list[Round],
                                                                          list[float]]:
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
        results: list[Round] = []
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
            # a new text each round: the clusters fetch new content each time, as the bare
            # subscribers receive the bytes each time
            contents = [api.post("/api/v1/contents/tts", json={
                "text": TEXTS[i % len(TEXTS)] + " Lần " + str(i + 1) + "."}).json()
                for i in range(rounds)]
            on_wire: list[float] = []
            watch = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-watch")
            watch.on_message = lambda *_: on_wire.append(time.perf_counter())
            watch.connect("127.0.0.1", broker.port)
            watch.subscribe(f"loa/v1/area/{province}/cmd", qos=0)
            watch.loop_start()
            reports = subprocess.Popen([sys.executable, "-c", REPORT_WATCHER, str(broker.port),
                                        str(n)], stdout=subprocess.PIPE, text=True)
            assert reports.stdout is not None and reports.stdout.readline().strip() == "ready"
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in reports.stdout or []],
                             daemon=True).start()
            for content in contents:
                results.append(_one_round(api, rt, content["id"], province, n, on_wire, lines))
            reports.kill()
            # only now: paho's loop_stop waits out its select (up to 1 s)
            watch.loop_stop()
            watch.disconnect()
        _stop(sim)  # nothing else runs while the bare path is measured
        sim = None
        # the same bytes through the bare broker path, round by round: one command and the
        # content's chunks
        chunk = 16 * 1024
        per_round = [[b"x" * 700] + [b"\0" * min(chunk, c["size"] - i)
                                     for i in range(0, c["size"], chunk)] for c in contents]
        # each round's fan-out, BARE_REPEATS times (one fan-out varies by 2x here): its median
        times = asyncio.run(_bare(broker.port, n, [p for p in per_round
                                                   for _ in range(BARE_REPEATS)]))
        bares = [statistics.median(times[i * BARE_REPEATS:(i + 1) * BARE_REPEATS])
                 for i in range(len(per_round))]
        return results, bares
    finally:
        if sim is not None:
            _stop(sim)
        broker.stop()


def _one_round(api: TestClient, rt: object, content_id: str, province: str, n: int,
               on_wire: list[float], lines: queue.Queue[str]) -> Round:
    sessions = rt.sessions  # type: ignore[attr-defined]
    time.sleep(1.0)  # the previous round's reports and writes have settled
    chunks_before = rt.content.chunks_sent  # type: ignore[attr-defined]
    on_wire.clear()
    t0 = time.perf_counter()
    t0_wall = datetime.now(UTC)
    prof = cProfile.Profile() if os.environ.get("LOA_BENCH_PROFILE_API") else None
    if prof:
        prof.enable()
    r = api.post("/api/v1/broadcasts", json={
        "content_id": content_id, "targets": {"areas": [province]}, "priority": "emergency"})
    returned = time.perf_counter() - t0
    if prof:
        prof.disable()
        prof.dump_stats(os.environ["LOA_BENCH_PROFILE_API"])
    assert r.status_code == 201, r.text
    bid = r.json()["id"]
    occ_id = r.json()["occurrence"]["id"] if r.json().get("occurrence") else None
    # first the last report on the broker (seen by the watcher process), then what the
    # controller has recorded: polling its database meanwhile would take CPU in the very
    # process being measured
    reported = float("nan")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            occ, at = lines.get(timeout=max(0.0, deadline - time.monotonic())).split()
        except queue.Empty:
            break
        if occ_id is None or occ == occ_id:
            reported = float(at) - t0_wall.timestamp()
            break
    wire = (on_wire[0] - t0) if on_wire else float("nan")
    ours = float("nan")
    # a count (one row, computed inside SQLite), not the rows themselves
    started_q = select(func.count()).select_from(Delivery).join(Occurrence).where(
        Occurrence.broadcast_id == bid, Delivery.started_at.is_not(None))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as db:
            if db.scalar(started_q) >= n:
                ours = time.perf_counter() - t0
                break
        time.sleep(0.01)
    with sessions() as db:
        started = db.scalars(select(Delivery.started_at).join(Occurrence).where(
            Occurrence.broadcast_id == bid)).all()
    lag = sorted((s - t0_wall).total_seconds() for s in started if s is not None)
    # the next round starts once this one has played everywhere (not preempting it)
    played_q = select(func.count()).select_from(Delivery).join(Occurrence).where(
        Occurrence.broadcast_id == bid, Delivery.state == "played")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sessions() as db:
            if db.scalar(played_q) >= n:
                break
        time.sleep(0.2)
    chunks = rt.content.chunks_sent - chunks_before  # type: ignore[attr-defined]
    return Round(wire, returned, reported, ours, len(lag), lag, chunks)


def _stop(sim: subprocess.Popen[bytes]) -> None:
    sim.terminate()
    try:
        sim.wait(30)
    except subprocess.TimeoutExpired:  # thousands of clusters may not all stop in time: the
        os.killpg(sim.pid, signal.SIGKILL)  # figures are taken already
        sim.wait(10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clusters", type=int, nargs="+", default=[600])
    p.add_argument("--sim-processes", type=int, default=os.cpu_count() or 1,
                   help="simulator processes (default: one per core)")
    p.add_argument("--rounds", type=int, default=3,
                   help="emergencies (and bare fan-outs) per size; medians are compared (a "
                        "2-core machine shared with other work varies by 30%% run to run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for total in args.clusters:
        communes = max(1, total // 15)
        n = communes * 15
        print(f"emergency to {n} clusters ({communes} communes x 15, simulator in "
              f"{args.sim_processes} process(es)), {args.rounds} round(s):")
        rounds, bares = run(communes, 15, args.sim_processes, args.rounds)
        for i, (r, bare) in enumerate(zip(rounds, bares, strict=True)):
            lag = r.lag or [float("nan")]
            print(f"  round {i + 1}: command on the wire {r.wire:5.2f} s, API returned "
                  f"{r.returned:5.2f} s; clusters' own starts {lag[0]:5.2f}-{lag[-1]:5.2f} s; "
                  f"last report on the broker {r.reported:5.2f} s, recorded {r.ours:5.2f} s "
                  f"({r.started}/{n}); {r.chunks} chunks sent; bare {bare:5.2f} s; "
                  f"ratio {r.reported / bare:4.2f}")
        reported = statistics.median(r.reported for r in rounds)
        ours = statistics.median(r.ours for r in rounds)
        bare = statistics.median(bares)
        # each round against its own bare fan-out (the same content size), then the median
        ratio_reported = statistics.median(r.reported / b for r, b in zip(rounds, bares,
                                                                          strict=True))
        ratio_ours = statistics.median(r.ours / b for r, b in zip(rounds, bares, strict=True))
        print(f"  API call -> last cluster reports playing  {reported:7.2f} s   (median; its "
              "report on the broker)")
        print(f"  API call -> controller has every report   {ours:7.2f} s   (median; what the "
              "officer's report shows)")
        print(f"  bare publisher -> last subscriber         {bare:7.2f} s   (median; same bytes, "
              "same broker)")
        print(f"  ratio, reports on the broker / bare       {ratio_reported:7.2f}   "
              "(median of the rounds' ratios; target <= 1.5)")
        print(f"  ratio, recorded by the controller / bare  {ratio_ours:7.2f}")


if __name__ == "__main__":
    main()
