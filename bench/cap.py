"""CAP emergency: time from the POST of a CAP 1.2 emergency alert until the last of
xã Hướng Đạo's 15 clusters reports ``playing`` (its first part: chime and headline), and
until every cluster plays the rest (its second part, made off the request), beside the same
emergency sent through the REST API with its recording already made (the baseline), in the
same run. Figures come from an independent MQTT client watching the clusters' reports.

The controller runs with the settings it ships with (emergency lead 1 s, chimes on); the
simulator runs in its own process. Each round sends a new text (nothing is cached): a
short alert (a headline and two sentences) and a long one (a 2,000-character
description, as real bulletins from the hydro-meteorological service are). The figure a
disaster office sees is "POST -> last playing"; the goal is 2 s.
"""

from __future__ import annotations

import argparse
import logging
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bench.common import Mosquitto
from bench.emergency import REPORT_WATCHER
from controller.app import create_app
from controller.db.models import Cluster, Delivery, Occurrence
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.settings import Settings
from devices.areas import load_fixture

COMMUNE = "vn-vp-tamduong-huongdao"
VN = ZoneInfo("Asia/Ho_Chi_Minh")
SHORT = ("Bão số {n} đổ bộ vào Vĩnh Phúc trong hai giờ tới, gió giật cấp 12. "
         "Người dân ở trong nhà, tránh xa sông suối và cột điện.")
LONG_PART = ("Hồi 16 giờ, vị trí tâm bão ở vào khoảng 21,0 độ Vĩ Bắc, 106,5 độ Kinh Đông. "
             "Sức gió mạnh nhất vùng gần tâm bão mạnh cấp 11, giật cấp 13. Trong 12 giờ tới "
             "bão di chuyển theo hướng Tây Tây Bắc, mỗi giờ đi được 15 đến 20 km. Vùng núi "
             "và trung du có mưa to đến rất to, nguy cơ cao xảy ra lũ quét và sạt lở đất. ")

ALERT = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>BENCH-{ident}</identifier>
  <sender>kttv@vinhphuc.gov.vn</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>vi-VN</language>
    <category>Met</category>
    <event>Bão</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <expires>{expires}</expires>
    <headline>Cảnh báo bão khẩn cấp lần {n}</headline>
    <description>{description}</description>
    <area><areaDesc>Xã Hướng Đạo</areaDesc></area>
  </info>
</alert>"""


def alert(ident: str, description: str, n: int) -> bytes:
    now = datetime.now(VN).replace(microsecond=0)
    return ALERT.format(ident=ident, n=n, sent=now.isoformat(),
                        expires=(now + timedelta(hours=3)).isoformat(),
                        description=escape(description)).encode()


def _round(api: TestClient, rt: object, lines: queue.Queue[str], n: int,
           send: Callable[[], Any]) -> tuple[float, float, float | None]:
    """(POST -> its answer, POST -> every cluster playing its first part, POST -> every
    cluster playing its second part, if it has one)."""
    sessions = rt.sessions  # type: ignore[attr-defined]
    while not lines.empty():  # what an earlier round left
        lines.get_nowait()
    t0_wall = time.time()
    t0 = time.perf_counter()
    r = send()
    returned = time.perf_counter() - t0
    assert r.status_code == 201, r.text
    body = r.json()
    bid = body.get("broadcast_id") or body.get("id")
    heard: dict[str, float] = {}
    parts: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not parts or len(heard) < len(parts)):
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic())).split()
        except queue.Empty:
            break
        if line[0] == "cmd":
            continue
        with sessions() as db:
            parts = [o.id for o in db.scalars(select(Occurrence).where(
                Occurrence.broadcast_id == bid).order_by(Occurrence.scheduled_at))]
        if line[0] in parts:
            heard[line[0]] = float(line[1]) - t0_wall
    first = heard.get(parts[0], float("nan")) if parts else float("nan")
    rest = heard.get(parts[1], float("nan")) if len(parts) > 1 else None
    # stopped once its figures are taken; the next round starts once it is over everywhere
    api.post(f"/api/v1/broadcasts/{bid}/cancel")
    done_q = select(func.count()).select_from(Delivery).join(Occurrence).where(
        Occurrence.broadcast_id == bid, Delivery.state.not_in(("played", "failed", "missed",
                                                                "cancelled")))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with sessions() as db:
            if db.scalar(done_q) == 0:
                break
        time.sleep(0.2)
    return returned, first, rest


Row = tuple[str, float, float, float | None, float, float]


def run(rounds: int) -> list[Row]:
    broker = Mosquitto()
    work = Path(tempfile.mkdtemp(prefix="loa-bench-cap-"))
    sim = None
    out = []
    try:
        net = load_fixture("huong-dao")
        settings = Settings(data_dir=work, mqtt_url=f"mqtt://127.0.0.1:{broker.port}",
                            admin_password="bench-pass")
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
                [sys.executable, "-m", "firmware_sim", "--fixture", "huong-dao",
                 "--mqtt", settings.mqtt_url or "", "--heartbeat", "30",
                 "--pubkey", str(work / "controller_ed25519.pub"), "--connect-spread", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            n = len(net.clusters)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with rt.sessions() as db:
                    if db.query(Cluster).filter(Cluster.state == "online").count() == n:
                        break
                time.sleep(0.3)
            watcher = subprocess.Popen([sys.executable, "-c", REPORT_WATCHER, str(broker.port),
                                        str(n), f"loa/v1/area/{COMMUNE}/cmd"],
                                       stdout=subprocess.PIPE, text=True)
            assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in watcher.stdout or []],
                             daemon=True).start()
            try:
                for i in range(rounds):
                    for kind in ("short", "long"):
                        text = SHORT.format(n=i + 1) if kind == "short" else \
                            f"Bản tin số {i + 1}. " + LONG_PART * 6
                        ident = f"{kind}-{i + 1}-{time.time_ns()}"
                        time.sleep(1.0)
                        doc = alert(ident, text, i + 1)
                        cap_ret, cap_air, cap_rest = _round(api, rt, lines, n, lambda d=doc:
                                                            api.post("/api/v1/cap", content=d,
                                                                     headers={"Content-Type":
                                                                              "application/xml"}))
                        # the baseline: the same kind of text, its recording made beforehand
                        made = api.post("/api/v1/contents/tts", json={
                            "text": text + " Nhắc lại."}).json()
                        time.sleep(1.0)
                        rest_ret, rest_air, _ = _round(api, rt, lines, n, lambda c=made["id"]:
                                                    api.post("/api/v1/broadcasts", json={
                                                        "content_id": c,
                                                        "targets": {"areas": [COMMUNE]},
                                                        "priority": "emergency"}))
                        out.append((kind, cap_ret, cap_air, cap_rest, rest_ret, rest_air))
            finally:
                watcher.kill()
        return out
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(30)
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"CAP emergency to xã Hướng Đạo (15 clusters), {args.rounds} round(s) per text "
          f"(at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC):")
    rows = run(args.rounds)
    for kind, cap_ret, cap_air, cap_rest, rest_ret, rest_air in rows:
        rest = f"{cap_rest:5.2f} s" if cap_rest is not None else "  -    "
        print(f"  {kind:5}  CAP: answered {cap_ret:5.2f} s, on the air {cap_air:5.2f} s, "
              f"the rest {rest}   REST, recording made: on the air {rest_air:5.2f} s")
    for kind in ("short", "long"):
        mine = [r for r in rows if r[0] == kind]
        cap_air = statistics.median(r[2] for r in mine)
        rests = [r[3] for r in mine if r[3] is not None]
        rest_air = statistics.median(r[5] for r in mine)
        print(f"  {kind:5}  median POST -> every cluster playing: CAP {cap_air:5.2f} s "
              f"(goal <= 2 s), its rest {statistics.median(rests) if rests else float('nan'):5.2f}"
              f" s; REST with the recording made {rest_air:5.2f} s; ratio "
              f"{cap_air / rest_air:4.2f}")


if __name__ == "__main__":
    main()
