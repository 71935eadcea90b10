"""Emergency fan-out: time from the emergency API call until the last cluster reports
``playing``, beside the raw broker time for the same bytes (the signed command and the
content chunks) from a bare publisher to as many bare subscribers, in the same run.

The simulator runs in its own processes (one asyncio task per cluster); the emergency lead
is set to its minimum so the figure measures delivery, not a configured delay. The bare
path (``bench.bare``: its own process, connected for the whole run) is measured right
after each round, with the simulator's processes stopped, so that each round is compared
with the bare path on the machine as it was then: a shared 2-core machine drifts by tens
of per cent within a minute.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import queue
import resource
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

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bench.common import Mosquitto
from bench.pg import fresh_database
from controller.app import create_app
from controller.db.models import Cluster, Delivery, Occurrence
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.settings import Settings
from devices.areas import generate

#: Runs in its own process (so it takes no CPU from the controller's process): prints
#: "ready" once subscribed, then "cmd SIZE TIME" for each command on the area topic (argv 3)
#: and "OCCURRENCE TIME" when the n-th cluster's first ``playing`` report for an occurrence
#: reached the broker's subscribers (wall-clock times).
REPORT_WATCHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, n, cmd_topic = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seen = {}
def on_message(c, u, m):
    now = time.time()
    if m.topic == cmd_topic:
        print(f"cmd {len(m.payload)} {now:.6f}", flush=True)
        return
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
subscribed = []
def on_subscribe(c, u, mid, rc, p):
    subscribed.append(mid)
    if len(subscribed) == 2:
        print("ready", flush=True)
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-report-watch")
c.on_message, c.on_subscribe = on_message, on_subscribe
c.connect("127.0.0.1", port)
c.subscribe("loa/v1/cluster/+/event", qos=0)  # (a measuring instrument: no acks to send)
c.subscribe(cmd_topic, qos=0)
c.loop_forever()
"""


def _profiler() -> list[str]:
    """LOA_BENCH_PROFILE_SIM=path.prof runs the simulator under cProfile (where it spends)."""
    out = os.environ.get("LOA_BENCH_PROFILE_SIM")
    return ["-m", "cProfile", "-o", out] if out else []


@dataclass
class Round:
    wire: float  # API call -> the command at a subscriber (the watcher process)
    returned: float  # API call -> its response
    reported: float  # API call -> the last cluster's playing report on the broker
    ours: float  # API call -> the controller has every cluster's start recorded (polled
    #              from when the last report is on the broker, so never earlier than that)
    started: int  # clusters whose start the controller recorded
    lag: list[float]  # the clusters' own start times after the call, sorted
    chunks: int  # content chunks the controller published (pushed, or asked for again)
    command_size: int  # bytes of the signed command as it went out


#: bare fan-outs per round; the round is compared with their median
BARE_REPEATS = 3

TEXTS = ["Cảnh báo bão khẩn cấp. Người dân ở trong nhà.",
         "Cảnh báo lũ quét. Người dân ven suối di chuyển lên cao.",
         "Cảnh báo sạt lở đất. Không đi qua vùng đồi núi.",
         "Cảnh báo mưa đá. Che chắn mái nhà và chuồng trại.",
         "Cảnh báo rét đậu. Giữ ấm cho người già và trẻ nhỏ."]


def run(communes: int, per: int, sim_processes: int, rounds: int,
        db_url: str | None = None) -> tuple[list[Round],
                                                                          list[float]]:
    broker = bare_broker = Mosquitto()
    work = Path(tempfile.mkdtemp(prefix="loa-bench-em-"))
    sim = None
    try:
        net = generate(communes, per)
        province = next(a.id for a in net.areas.values() if a.parent_id is None)
        settings = Settings(data_dir=work, mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
                            admin_password="bench-pass", emergency_lead_s=0.0, chime=False,
                            database_url=db_url)
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
                    up = db.query(Cluster).filter(Cluster.state.in_(("online", "degraded"))).count()
                if up == n:
                    break
                time.sleep(0.5)
            # a new text each round: the clusters fetch new content each time, as the bare
            # subscribers receive the bytes each time
            contents = [api.post("/api/v1/contents/tts", json={
                "text": TEXTS[i % len(TEXTS)] + " Lần " + str(i + 1) + "."}).json()
                for i in range(rounds)]
            reports = subprocess.Popen([sys.executable, "-c", REPORT_WATCHER, str(broker.port),
                                        str(n), f"loa/v1/area/{province}/cmd"],
                                       stdout=subprocess.PIPE, text=True)
            # the bare subscribers on a broker of their own when one cannot hold both
            # fleets (its open files: this machine's limit is 20,000); the same binary and
            # configuration, idle but for them, and measured with the simulator stopped
            if 2 * n + 100 > resource.getrlimit(resource.RLIMIT_NOFILE)[0]:  # (inherited)
                bare_broker = Mosquitto()
            bare = subprocess.Popen([sys.executable, "-m", "bench.bare", str(bare_broker.port),
                                     str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert reports.stdout is not None and reports.stdout.readline().strip() == "ready"
            assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in reports.stdout or []],
                             daemon=True).start()
            bares: list[float] = []
            try:
                for content in contents:
                    results.append(_one_round(api, rt, content["id"], province, n, lines))
                    # the same bytes through the bare path, right after (the machine as it
                    # is now): the command and the content's chunks
                    chunk = rt.content.chunk_size
                    sizes = [results[-1].command_size] + [
                        min(chunk, content["size"] - i) for i in range(0, content["size"], chunk)]
                    bares.append(_bare_round(bare, sizes, sim))
            finally:
                reports.kill()
                bare.kill()
        return results, bares
    finally:
        if sim is not None:
            _stop(sim)
        broker.stop()
        if bare_broker is not broker:
            bare_broker.stop()


def _bare_round(bare: subprocess.Popen[str], sizes: list[int],
                sim: subprocess.Popen[bytes]) -> float:
    """BARE_REPEATS fan-outs of these sizes by the bare worker (``bench.bare``), with the
    simulator's processes stopped meanwhile (SIGSTOP) and the controller idle: nothing else
    runs while the bare path is measured. Their median."""
    assert bare.stdin is not None and bare.stdout is not None
    os.killpg(sim.pid, signal.SIGSTOP)
    try:
        times = []
        for _ in range(BARE_REPEATS):
            time.sleep(0.3)  # what came before has settled
            bare.stdin.write(" ".join(map(str, sizes)) + "\n")
            bare.stdin.flush()
            times.append(float(bare.stdout.readline()))
    finally:
        os.killpg(sim.pid, signal.SIGCONT)
    return statistics.median(times)


def _one_round(api: TestClient, rt: object, content_id: str, province: str, n: int,
               lines: queue.Queue[str]) -> Round:
    sessions = rt.sessions  # type: ignore[attr-defined]
    time.sleep(1.0)  # the previous round's reports and writes have settled
    chunks_before = rt.content.chunks_sent  # type: ignore[attr-defined]
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
    reported = wire = float("nan")
    command_size = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic())).split()
        except queue.Empty:
            break
        if line[0] == "cmd":
            command_size, wire = int(line[1]), float(line[2]) - t0_wall.timestamp()
        elif occ_id is None or line[0] == occ_id:
            reported = float(line[1]) - t0_wall.timestamp()
            break
    assert command_size, "the watcher saw no command"
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
    return Round(wire, returned, reported, ours, len(lag), lag, chunks, command_size)


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
    p.add_argument("--rounds", type=int, default=5,
                   help="emergencies (and bare fan-outs) per size; medians are compared (a "
                        "2-core machine shared with other work varies by 30%% run to run)")
    p.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite",
                   help="the controller's database (postgresql: a fresh one at LOA_BENCH_PG)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for total in args.clusters:
        communes = max(1, total // 15)
        n = communes * 15
        print(f"emergency to {n} clusters ({communes} communes x 15, simulator in "
              f"{args.sim_processes} process(es)), {args.rounds} round(s):")
        if args.db == "postgresql":
            with fresh_database() as url:
                rounds, bares = run(communes, 15, args.sim_processes, args.rounds, url)
        else:
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
