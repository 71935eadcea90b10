"""A province on one machine, measured from outside as an operator would: ``loa serve`` and
``loa sim`` as processes, PostgreSQL, a private Mosquitto.

- **connect**: every simulated cluster started at once; seconds until the API counts every
  one online (and the controller's CPU meanwhile);
- **steady state**: the controller's CPU (share of one core) and resident memory over 60 s
  with every cluster heartbeating (30 s, the product's default);
- **pages**: ``GET /api/v1/clusters?limit=50`` at 20 offsets and ``GET /api/v1/fleet``
  (the technician's first screen), milliseconds each;
- **normal bulletin to all**: scheduled 25 s ahead (dispatch lead 15 s); how many clusters
  played it and the spread of their starts (the API's ``start_spread_ms``);
- **many authorities at once**: 50 emergencies, each to its own commune, posted by 50
  clients within one second; per emergency, seconds from its POST to the last of its 15
  clusters ``playing`` on the broker (an independent watcher process).

The simulator is the harness, spread over ``--sim-processes`` processes; on a 2-core machine
it competes with the controller for the CPU, which the figures include.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Mosquitto
from bench.emergency import REPORT_WATCHER
from bench.pg import fresh_database
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.settings import Settings
from controller.transport.broker import free_port
from devices.areas import generate

PASSWORD = "bench-pass-123"


class Api:
    def __init__(self, base: str):
        self.base, self.token = base, ""

    def call(self, method: str, path: str, obj: Any = None, form: dict[str, str] | None = None
             ) -> tuple[int, Any, float]:
        body, ctype = None, "application/json"
        if form is not None:
            body, ctype = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        elif obj is not None:
            body = json.dumps(obj).encode()
        req = urllib.request.Request(self.base + path, data=body, method=method)
        req.add_header("Content-Type", ctype)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                data = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            data, status = e.read(), e.code
        return status, json.loads(data or b"null"), time.perf_counter() - t0

    def get(self, path: str) -> Any:
        status, body, _ = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


PHASES = ("steady", "pages", "bulletin", "emergencies")


def run(communes: int, sim_processes: int, db_url: str,
        phases: tuple[str, ...] = PHASES) -> None:
    per = 15
    broker = Mosquitto()
    work = Path(tempfile.mkdtemp(prefix="loa-bench-province-"))
    net = generate(communes, per)
    n = len(net.clusters)
    province = next(a.id for a in net.areas.values() if a.parent_id is None)
    upgrade(db_url)
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as db:
        register_network(db, net)
    engine.dispose()
    port = free_port()
    env = {**os.environ, "LOA_DATA_DIR": str(work), "LOA_DATABASE_URL": db_url,
           "LOA_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}", "LOA_ADMIN_PASSWORD": PASSWORD,
           "LOA_CHIME": "false", "LOA_EMERGENCY_LEAD_S": "0",
           # (50 authorities' recordings made in a minute by one account: not the subject)
           "LOA_AUDIO_BURST": "100", "LOA_AUDIO_PER_HOUR": "10000"}
    ctl = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port",
                            str(port)], env=env, stdout=(work / "controller.log").open("w"),
                           stderr=subprocess.STDOUT)
    sim = None
    api = Api(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, tok, _ = api.call("POST", "/api/v1/auth/token",
                                          form={"username": "admin", "password": PASSWORD})
                if status == 200:
                    api.token = tok["access_token"]
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the controller did not start")
            time.sleep(0.3)
        print(f"province of {n} clusters ({communes} communes x {per}), PostgreSQL, "
              f"simulator in {sim_processes} process(es):")
        # --- connect ------------------------------------------------------------------
        t0, c0 = time.monotonic(), _cpu_s(ctl.pid)
        sim = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim", "--communes", str(communes),
             "--clusters-per-commune", str(per), "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
             "--pubkey", str(work / "controller_ed25519.pub"), "--heartbeat", "30",
             "--processes", str(sim_processes)],
            stdout=(work / "sim.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        online = 0
        while time.monotonic() - t0 < 600:
            time.sleep(2)
            states = api.get("/api/v1/fleet?limit=1")["summary"]["states"]
            online = states.get("online", 0) + states.get("degraded", 0)  # (connected)
            if online == n:
                break
        took = time.monotonic() - t0
        print(f"  connect: {online}/{n} online or degraded after {took:.0f} s (controller "
              f"{(_cpu_s(ctl.pid) - c0) / took * 100:.0f} % of a core meanwhile)")
        if "steady" in phases:
            _steady(api, ctl.pid)
        if "pages" in phases:
            _pages(api, n)
        if "bulletin" in phases:
            _bulletin(api, broker.port, province, n)
        if "emergencies" in phases:
            _emergencies(api, broker.port, net, per)
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(sim.pid, 9)
                sim.wait(10)
        ctl.terminate()
        ctl.wait(60)
        broker.stop()


def _steady(api: Api, pid: int) -> None:
    """The controller's CPU and memory with every cluster heartbeating."""
    time.sleep(30)  # the clock exchanges after connecting are over
    t1, c1 = time.monotonic(), _cpu_s(pid)
    spy = os.environ.get("LOA_BENCH_SPY")  # where the controller spends it (py-spy)
    if spy:
        subprocess.run(["py-spy", "record", "-p", str(pid), "-d", "55", "-r", "20",
                        "-f", "raw", "-o", spy], capture_output=True, check=False)
    time.sleep(max(0.0, 60 - (time.monotonic() - t1)))
    share = (_cpu_s(pid) - c1) / (time.monotonic() - t1) * 100
    print(f"  steady state: controller {share:.1f} % of a core, {_rss_mb(pid):.0f} MB "
          f"resident; {api.get('/api/v1/fleet?limit=1')['summary']['online']} online")


def _pages(api: Api, n: int) -> None:
    """The console's first pages."""
    times = []
    for i in range(20):
        status, rows, dt = api.call("GET", f"/api/v1/clusters?limit=50&offset={i * n // 20}")
        assert status == 200 and len(rows) == 50, (status, len(rows))
        times.append(dt * 1000)
    fleet = [api.call("GET", "/api/v1/fleet?limit=50")[2] * 1000 for _ in range(5)]
    print(f"  GET /clusters?limit=50: median {statistics.median(times):.0f} ms, max "
          f"{max(times):.0f} ms (20 pages); GET /fleet?limit=50: median "
          f"{statistics.median(fleet):.0f} ms")


def _bulletin(api: Api, port: int, province: str, n: int) -> None:
    """A normal bulletin to every cluster, scheduled ahead as an officer would (the
    product's dispatch lead); an independent watcher on the broker times each stage."""
    status, content, _ = api.call("POST", "/api/v1/contents/tts",
                                  {"text": "Thông báo lịch tiêm chủng tháng này."})
    lead = Settings.model_fields["dispatch_lead_s"].default
    watch = subprocess.Popen([sys.executable, "-m", "bench.bulletin_watch", str(port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None and watch.stdout.readline().strip() == "ready"
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead + 20)
        status, bc, _ = api.call("POST", "/api/v1/broadcasts", {
            "content_id": content["id"], "targets": {"areas": [province]},
            "start_at": start.isoformat()})
        assert status == 201, bc
        path = f"/api/v1/broadcasts/{bc['id']}?deliveries_limit=0"
        # a moment before the start: who holds the command and the audio (ready)
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds() - 1.5))
        before = (api.get(path).get("occurrence") or {}).get("summary")
        deadline = time.monotonic() + 120
        occ: dict[str, Any] = {}
        while time.monotonic() < deadline:
            time.sleep(2)
            occ = api.get(path).get("occurrence") or {}
            if occ.get("summary", {}).get("played", 0) + occ.get("summary", {}).get(
                    "failed", 0) >= n:
                break
        recorded = time.time() - start.timestamp()
        assert watch.stdin is not None
        watch.stdin.write(occ.get("id", "") + "\n")
        watch.stdin.flush()
        seen = json.loads(watch.stdout.readline())
    finally:
        watch.kill()
    late = []
    for offset in range(0, n, 5000):
        page = api.get(f"/api/v1/broadcasts/{bc['id']}?deliveries_limit=5000"
                       f"&deliveries_offset={offset}")["deliveries"]
        late += [(datetime.fromisoformat(d["started_at"]) - start).total_seconds() * 1000
                 for d in page if d["started_at"]]
    late.sort()
    pct = {q: late[min(len(late) - 1, int(len(late) * q))] for q in (0.5, 0.99)} \
        if late else {}
    t0 = start.timestamp()

    def rel(t: float | None) -> str:
        return "-" if t is None else f"{t - t0:+.1f} s"

    wire = seen["wire"]
    print(f"  normal bulletin to all (dispatch lead {lead:.0f} s), times on the broker "
          f"relative to its start:\n"
          f"    command {rel(seen['command'])} (dispatch time {-lead:+.0f} s); chunks "
          f"{rel((seen['chunks'] or [None])[0])} .. {rel((seen['chunks'] or [None])[-1])}, "
          f"{seen['content_requests']} content requests")
    for state in ("received", "ready", "playing", "played", "failed"):
        w = wire.get(state)
        if w:
            print(f"    {state:8} {w[3]:>6}: first {rel(w[0])}, median {rel(w[1])}, "
                  f"last {rel(w[2])}")
    bl = seen["board_late_s"]
    if bl:
        print(f"    each board's start by its own clock, after start_at (the simulator's "
              f"event-loop lag): min {bl[0] * 1000:.0f} ms, median {bl[1] * 1000:.0f} ms, "
              f"p99 {bl[2] * 1000:.0f} ms, max {bl[3] * 1000:.0f} ms")
    # the boards' clocks (their error against true time, as their last heartbeat said; a
    # simulated board knows it exactly): the share of a start spread that clocks make
    errs = []
    for offset in range(0, n, 1000):
        errs += [c["telemetry"]["clock_offset_ms"] for c in
                 api.get(f"/api/v1/clusters?limit=1000&offset={offset}")
                 if (c.get("telemetry") or {}).get("clock_offset_ms") is not None]
    errs.sort()
    if errs:
        p1, p99 = errs[int(len(errs) * 0.01)], errs[int(len(errs) * 0.99)]
        print(f"    the boards' clocks against true time: p1 {p1} ms, median "
              f"{errs[len(errs) // 2]} ms, p99 {p99} ms (p1-p99 spread {p99 - p1} ms); "
              f"min {errs[0]} ms, max {errs[-1]} ms")
    print(f"    the API 1.5 s before the start: {before}; at +{recorded:.0f} s: "
          f"{occ.get('summary')}; start spread {occ.get('start_spread_ms')} ms; recorded "
          f"start vs schedule p50 {pct.get(0.5, 0):.0f} ms, p99 {pct.get(0.99, 0):.0f} ms")


def _emergencies(api: Api, port: int, net: Any, per: int) -> None:
    """50 emergencies from 50 communes, posted within one second."""
    communes_ids = sorted(a.id for a in net.areas.values() if a.kind == "commune")[:50]
    contents = [api.call("POST", "/api/v1/contents/tts", {
        "text": f"Cảnh báo khẩn cấp số {i + 1}. Người dân ở trong nhà."})[1]["id"]
        for i in range(len(communes_ids))]
    watcher = subprocess.Popen([sys.executable, "-c", REPORT_WATCHER, str(port),
                                str(per), "bench/none"], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
    lines: queue.Queue[tuple[str, float]] = queue.Queue()

    def read() -> None:
        assert watcher is not None and watcher.stdout is not None
        for line in watcher.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[0] != "cmd":
                lines.put((parts[0], float(parts[1])))

    threading.Thread(target=read, daemon=True).start()
    try:
        _post_emergencies(api, contents, communes_ids, lines)
    finally:
        watcher.kill()


def _post_emergencies(api: Api, contents: list[str], communes_ids: list[str],
                      lines: queue.Queue[tuple[str, float]]) -> None:
    posted: dict[str, float] = {}
    answers: list[Any] = []

    def post(i: int) -> None:
        at = time.time()
        status, b, _ = api.call("POST", "/api/v1/broadcasts", {
            "content_id": contents[i], "targets": {"areas": [communes_ids[i]]},
            "priority": "emergency"})
        answers.append((status, b))
        if status == 201 and b.get("occurrence"):
            posted[b["occurrence"]["id"]] = at

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(contents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [a for a in answers if a[0] != 201]
    aired: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(aired) < len(posted) and time.monotonic() < deadline:
        try:
            occ_id, at = lines.get(timeout=1)
        except queue.Empty:
            continue
        if occ_id in posted:
            aired[occ_id] = at - posted[occ_id]
    lags = sorted(aired.values())
    print(f"  50 emergencies from 50 communes at once: {len(aired)}/{len(posted)} on the "
          f"air in all 15 clusters ({len(refused)} refused); POST -> last playing: median "
          f"{statistics.median(lags) if lags else float('nan'):.2f} s, max "
          f"{max(lags) if lags else float('nan'):.2f} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters", type=int, nargs="+", default=[10005])
    p.add_argument("--sim-processes", type=int, default=2)
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                   help="what to measure after the connect (all by default)")
    args = p.parse_args(argv)
    for total in args.clusters:
        with fresh_database() as url:
            run(max(1, total // 15), args.sim_processes, url, tuple(args.phases))


if __name__ == "__main__":
    main()
