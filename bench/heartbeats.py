"""Heartbeats per second the controller sustains with full validation and persistence,
beside a bare paho subscriber draining the same broker, in the same run.

Both receive the same N heartbeats from C clusters, flooded by a publisher process over a
private Mosquitto; each rate is N / (time from the publisher's start to the last message
handled). For the controller "handled" means validated, applied to health state, and
committed to the database.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import Mosquitto, publish_file
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.runtime import Runtime
from controller.settings import Settings
from devices.areas import generate
from devices.messages import Birth, SpeakerReport, Telemetry, dumps
from devices.topics import cluster_status, cluster_telemetry


def heartbeats(cluster_ids: list[str], n: int) -> list[tuple[str, bytes]]:
    out = []
    now = datetime.now(UTC)
    for i in range(n):
        cid = cluster_ids[i % len(cluster_ids)]
        t = Telemetry(v=1, cluster_id=cid, seq=i // len(cluster_ids) + 1, bd_seq=1, ts=now,
                      uptime_s=1000 + i, firmware="bench/1", link={"type": "4g", "rssi_dbm": -80},
                      power={"source": "mains", "battery_pct": 100}, amp_temp_c=40.5,
                      volume_pct=80, storage_free_kb=500_000, clock_offset_ms=2, playing=None,
                      speakers=[SpeakerReport(index=1, state="ok"), SpeakerReport(index=2, state="ok")])
        out.append((cluster_telemetry(cid), dumps(t)))
    return out


def bare_rate(port: int, msgs: list[tuple[str, bytes]]) -> float:
    got = 0
    done = threading.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal got
        got += 1
        if got == len(msgs):
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe("loa/v1/cluster/+/telemetry", 0)
    c.loop_start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    pub = publish_file(port, msgs)
    done.wait(120)
    elapsed = time.perf_counter() - t0
    pub.wait()
    c.disconnect()
    c.loop_stop()
    if got != len(msgs):
        raise SystemExit(f"bare subscriber got {got} of {len(msgs)}")
    return len(msgs) / elapsed


def controller_rate(port: int, msgs: list[tuple[str, bytes]], cluster_ids: list[str],
                    db_url: str | None, work: Path) -> tuple[float, dict[str, int]]:
    settings = Settings(data_dir=work, mqtt_url=f"mqtt://127.0.0.1:{port}", database_url=db_url,
                        admin_password="bench")
    net_db = settings.db_url
    upgrade(net_db)
    engine = make_engine(net_db)
    with make_sessionmaker(engine)() as db:
        register_network(db, generate(1, len(cluster_ids), prefix="bench"))
    engine.dispose()
    rt = Runtime.build(settings)
    rt.start()
    try:
        births = [(cluster_status(cid), dumps(Birth(
            v=1, cluster_id=cid, state="online", bd_seq=1, ts=datetime.now(UTC), firmware="bench/1",
            heartbeat_s=30, speakers=[SpeakerReport(index=1, state="ok"),
                                      SpeakerReport(index=2, state="ok")]))) for cid in cluster_ids]
        publish_file(port, births).wait()
        deadline = time.monotonic() + 60
        while rt.ingest.processed < len(births) and time.monotonic() < deadline:
            time.sleep(0.05)
        base = rt.ingest.processed
        t0 = time.perf_counter()
        pub = publish_file(port, msgs)
        deadline = time.monotonic() + 300
        while rt.ingest.persisted - base < len(msgs) and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        pub.wait()
        handled = rt.ingest.persisted - base
        if handled < len(msgs):
            raise SystemExit(f"controller handled {handled} of {len(msgs)} "
                             f"(dropped: {rt.link.counters['dropped_overload']})")
        with rt.sessions() as db:
            from sqlalchemy import func, select

            from controller.db.models import Cluster
            states = dict(db.execute(select(Cluster.state, func.count()).group_by(Cluster.state)).all())
        return len(msgs) / elapsed, states
    finally:
        rt.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--messages", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3,
                   help="bare and controller alternate this many times; medians are printed "
                        "(a 2-core machine shared with other work varies by 30%% run to run)")
    p.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    ids = [f"bench-{0:04d}-{k:03d}" for k in range(args.clusters)]
    msgs = heartbeats(ids, args.messages)
    bares, ours_all, ratios = [], [], []
    states: dict[str, int] = {}
    print(f"heartbeats: {args.messages} from {args.clusters} clusters over Mosquitto, "
          f"{args.rounds} round(s)")
    for r in range(args.rounds):
        broker = Mosquitto()
        try:
            bare = bare_rate(broker.port, msgs)
            with tempfile.TemporaryDirectory() as work:
                ours, states = controller_rate(broker.port, msgs, ids, args.database_url,
                                               Path(work))
        finally:
            broker.stop()
        bares.append(bare)
        ours_all.append(ours)
        ratios.append(ours / bare)
        print(f"  round {r + 1}: bare {bare:8.0f} msg/s   controller {ours:8.0f} msg/s   "
              f"ratio {ours / bare:5.2f}")
    bare, ours, ratio = (statistics.median(x) for x in (bares, ours_all, ratios))
    print(f"  bare paho subscriber        {bare:10.0f} msg/s   (median)")
    print(f"  controller (validate+store) {ours:10.0f} msg/s   (median; clusters: {states})")
    print(f"  ratio controller / bare     {ratio:10.2f}   (median of the rounds' ratios; "
          "target >= 0.80, and >= 10000/s)")


if __name__ == "__main__":
    main()
