"""The fault suite: a station (a private Mosquitto, ``loa serve``, the simulated xã Hướng
Đạo with its 15 clusters, a database) meets the faults a real one meets, and every test
checks the same two things:

- what each simulated cluster actually played, counted from its own recording
  (``--record-dir``: one line per airing in ``<cluster>/plays.jsonl``): every online
  cluster played the bulletin exactly once;
- what the API records: each of those deliveries ``played``, and nothing else.

Processes are killed and restarted for real (``kill -9`` of the broker and of the
controller, a PostgreSQL server stopped for 20 s, a data folder on a full or read-only
file system).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key

from devices import topics
from devices.areas import load_fixture
from tests.integration.harness import (
    ROOT,
    ControllerProcess,
    HttpApi,
    SimThread,
    make_settings,
    seed,
    sim_process,
)
from tests.utils.broker import Broker, Watcher, port_open, wait_for
from tests.utils.nats import NatsCluster, needs_nats
from tests.utils.postgres import PgServer, pg_binaries
from tests.utils.proxy import FirstUp

pytestmark = [pytest.mark.integration, pytest.mark.faults]

COMMUNE = "vn-vp-tamduong-huongdao"
CLUSTERS = 15
#: the play is sent this long before the start (the product's default is 60 s)
LEAD_S = 6
#: about ten seconds of speech: long enough to break things while it plays
TEXT = ("Thông báo của Ủy ban nhân dân xã Hướng Đạo. Sáng mai từ bảy giờ đến mười một giờ, "
        "điện lực Tam Dương cắt điện để sửa chữa đường dây. Đề nghị bà con chủ động.")
ENV = {"LOA_DISPATCH_LEAD_S": str(LEAD_S), "LOA_REPORT_GRACE_S": "5",
       "LOA_LATE_GRACE_S": "120", "LOA_MIN_START_LEAD_S": "2"}


@dataclass
class Station:
    tmp: Path
    broker: Broker
    ctl: ControllerProcess
    api: HttpApi
    played: Path
    sim: subprocess.Popen[bytes] | None = None
    sim_thread: SimThread | None = None
    content_id: str = ""
    duration_s: float = 0.0
    extra: list[Any] = field(default_factory=list)

    # --- the station ----------------------------------------------------------------------

    @classmethod
    @contextmanager
    def open(cls, tmp: Path, db_url: str | None = None, data_dir: Path | None = None,
             in_process_sim: bool = False) -> Iterator[Station]:
        broker = Broker(tmp).start()
        data = data_dir or tmp / "data"
        settings = make_settings(data, broker, db_url)
        seed(settings, load_fixture("huong-dao"))
        ctl = ControllerProcess(settings, ENV, log=tmp / "controller.log").start()
        st = cls(tmp, broker, ctl, HttpApi(ctl.base).login(), tmp / "played")
        pub = data / "controller_ed25519.pub"
        try:
            if in_process_sim:
                st.sim_thread = SimThread(load_fixture("huong-dao"), SimConfig(
                    port=broker.port, heartbeat_s=2, keys=[load_verify_key(pub)],
                    record_dir=st.played, state_dir=tmp / "boards", reconnect_max_s=2)).start()
            else:
                st.start_sim()
            wait_for(lambda: st.online() == CLUSTERS, 30, "15 clusters online")
            status, content = st.api.post("/api/v1/contents/tts", {"text": TEXT})
            assert status == 201, content
            st.content_id, st.duration_s = content["id"], content["duration_s"]
            yield st
        finally:
            if st.sim_thread is not None:
                st.sim_thread.stop()
            st.stop_sim()
            ctl.stop()
            broker.kill()

    def start_sim(self) -> None:
        """``loa sim`` for Hướng Đạo, recording what each board plays, each keeping its
        unsent events in a state folder (so a simulator killed and started again is a
        reboot of every board)."""
        self.sim = sim_process(self.broker, self.ctl.settings.data_dir / "controller_ed25519.pub",
                               2, "--fixture", "huong-dao", "--record-dir", str(self.played),
                               "--state-dir", str(self.tmp / "boards"), log=self.tmp / "sim.log")

    def stop_sim(self) -> None:
        """``loa sim`` stopped as an operator would (SIGTERM), if it runs."""
        if self.sim is None:
            return
        self.sim.terminate()
        try:
            self.sim.wait(15)
        except subprocess.TimeoutExpired:  # (not this suite's subject: say so, go on)
            print(f"loa sim outlived SIGTERM by 15 s; killed (log: {self.tmp / 'sim.log'})",
                  file=sys.stderr)
            self.sim.kill()
            self.sim.wait(10)
        self.sim = None

    def kill_sim(self) -> None:
        assert self.sim is not None
        self.sim.kill()  # SIGKILL: every board loses power at once
        self.sim.wait(10)
        self.sim = None

    def online(self) -> int:
        return sum(c["state"] == "online" for c in self.api.get("/api/v1/clusters"))

    def restart_controller(self) -> None:
        self.ctl.start()
        self.api = HttpApi(self.ctl.base).login()

    # --- bulletins ------------------------------------------------------------------------

    def schedule(self, in_s: float, priority: str = "normal") -> tuple[str, datetime]:
        start = datetime.now(UTC) + timedelta(seconds=in_s)
        status, bc = self.api.post("/api/v1/broadcasts", {
            "content_id": self.content_id, "targets": {"areas": [COMMUNE]},
            "start_at": start.isoformat(), "priority": priority})
        assert status == 201, bc
        return bc["id"], start

    def plays(self, broadcast_id: str) -> Counter[str]:
        """How many times each cluster actually played ``broadcast_id`` (its recording)."""
        out: Counter[str] = Counter()
        for f in self.played.glob("*/plays.jsonl"):
            for line in f.read_text().splitlines():
                if json.loads(line)["broadcast_id"] == broadcast_id:
                    out[f.parent.name] += 1
        return out

    def recorded(self, broadcast_id: str, timeout: float = 60) -> dict[str, Any]:
        """The API's record once every delivery is final (and stays so for a sweep)."""
        def final() -> dict[str, Any] | None:
            status, b = self.api.call("GET", f"/api/v1/broadcasts/{broadcast_id}")
            if status != 200 or len(b["deliveries"]) != CLUSTERS:
                return None
            if all(d["state"] in ("played", "failed", "missed", "cancelled")
                   for d in b["deliveries"]):
                return b  # type: ignore[no-any-return]
            return None

        return wait_for(final, timeout, f"every delivery of {broadcast_id} final",  # type: ignore[no-any-return]
                        every=0.25)

    def check(self, broadcast_id: str, timeout: float = 60) -> dict[str, Any]:
        """Every cluster played it exactly once, and the API says played for each (the
        record may lag what was played by a report on its way, never disagree with it)."""
        plays = wait_for(lambda: (p := self.plays(broadcast_id)) and len(p) == CLUSTERS and p,
                         timeout, "15 clusters' recordings of the bulletin")

        def matches() -> dict[str, Any] | None:
            b = self.recorded(broadcast_id, timeout)
            states = {d["cluster_id"]: d["state"] for d in b["deliveries"]}
            return b if states == {c: "played" for c in plays} else None

        try:
            b = wait_for(matches, timeout, "the API's record of what was played")
        except AssertionError:
            b = self.recorded(broadcast_id, 5)
            raise AssertionError(f"played {dict(plays)}, API says " + str(
                {d["cluster_id"]: (d["state"], d["error"]) for d in b["deliveries"]})) from None
        plays = self.plays(broadcast_id)
        assert set(plays.values()) == {1}, f"played more than once: {plays}"
        return b  # type: ignore[no-any-return]


def _kill_after(st: Station, at: datetime) -> None:
    left = (at - datetime.now(UTC)).total_seconds()
    if left > 0:
        time.sleep(left)  # the fault's own moment (the scenario), not a wait for an outcome


# --- the broker ---------------------------------------------------------------------------


@pytest.mark.parametrize("moment", ["across-dispatch", "during-playback"])
def test_broker_killed_and_back_after_5s(tmp_path: Path, moment: str) -> None:
    with Station.open(tmp_path) as st:
        bc, start = st.schedule(LEAD_S + 6)
        # across the dispatch: down from 1 s before the play is sent until after it;
        # during playback: down from 1 s after the start, the played reports due meanwhile
        kill_at = start - timedelta(seconds=LEAD_S + 1) if moment == "across-dispatch" \
            else start + timedelta(seconds=1)
        _kill_after(st, kill_at)
        st.broker.kill()
        time.sleep(5)  # the outage
        st.broker.start()
        b = st.check(bc)
        assert len(b["occurrences"]) == 1


# --- the controller -----------------------------------------------------------------------


def test_controller_killed_during_playback(tmp_path: Path) -> None:
    with Station.open(tmp_path) as st:
        bc, start = st.schedule(LEAD_S + 3)
        _kill_after(st, start + timedelta(seconds=1))
        st.ctl.kill()  # the clusters go on playing, and report to nobody
        time.sleep(2)
        st.restart_controller()
        b = st.check(bc)
        assert all(d["corrected_from"] is None for d in b["deliveries"])


def test_boards_rebooted_while_the_controller_is_down_still_report(tmp_path: Path) -> None:
    """The controller dies during playback; the boards play, queue their reports, and all
    lose power before the controller is back: after the reboot their reports still come
    (the outbox is on the board's storage), and nothing plays twice."""
    with Station.open(tmp_path) as st:
        bc, start = st.schedule(LEAD_S + 3)
        _kill_after(st, start + timedelta(seconds=1))
        st.ctl.kill()
        wait_for(lambda: len(st.plays(bc)) == CLUSTERS, st.duration_s + 20,
                 "every board to finish playing")
        st.kill_sim()
        st.restart_controller()
        st.start_sim()
        st.check(bc)


def test_emergency_killed_between_its_publish_and_its_record(tmp_path: Path) -> None:
    """The emergency's command is on the broker, its rows not yet written (the database
    is held by another writer), and the controller is killed: it airs, and the controller
    records it when it is back (its spool)."""
    with Station.open(tmp_path) as st:
        commands = Watcher(st.broker.port, topics.area_cmd(COMMUNE))
        db = sqlite3.connect(tmp_path / "data" / "loa.db", timeout=30)
        db.execute("BEGIN IMMEDIATE")  # the controller's writes now wait
        answer: list[Any] = []
        post = threading.Thread(target=lambda: answer.append(_try(lambda: st.api.post(
            "/api/v1/broadcasts", {"content_id": st.content_id, "priority": "emergency",
                                   "targets": {"areas": [COMMUNE]}}))))
        post.start()
        wait_for(lambda: commands.got, 15, "the emergency's play on the broker")
        st.ctl.kill()
        commands.close()
        post.join(35)
        db.rollback()
        db.close()
        assert answer and isinstance(answer[0], Exception), answer  # no answer: it was killed
        st.restart_controller()
        listed = wait_for(lambda: st.api.get("/api/v1/broadcasts?limit=10"), 10,
                          "the broadcast list")
        emergencies = [b for b in listed if b["priority"] == "emergency"]
        assert len(emergencies) == 1, listed
        st.check(emergencies[0]["id"])


def _try(fn: Any) -> Any:
    try:
        return fn()
    except OSError as exc:  # (the controller was killed under the request)
        return exc


# --- the database -------------------------------------------------------------------------


@pytest.mark.skipif(pg_binaries() is None, reason="no PostgreSQL server binaries")
def test_postgresql_down_20s_during_playback(tmp_path: Path) -> None:
    pg = PgServer().start()
    try:
        with Station.open(tmp_path, db_url=pg.url) as st:
            bc, start = st.schedule(LEAD_S + 3)
            _kill_after(st, start + timedelta(seconds=1))
            down_at = datetime.now(UTC)
            pg.stop()
            # meanwhile the API says why it cannot answer
            status, body = st.api.call("GET", f"/api/v1/broadcasts/{bc}")
            assert status == 503 and body["code"] == "storage_unavailable", body
            assert body["params"]["reason"] == "unreachable"
            time.sleep(20)  # the outage: the bulletin ends and every report comes in
            pg.start()
            st.check(bc)
            # the heartbeats that waited out the outage in the controller's inbox were not
            # taken for silence: no cluster was declared offline for the database's stall
            for c in st.api.get("/api/v1/clusters"):
                since = datetime.fromisoformat(c["state_since"])
                assert c["state"] == "online" and since < down_at, c
            metrics = st.api.text("/metrics")
            rejected = [ln for ln in metrics.splitlines()
                        if ln.startswith("loa_mqtt_messages_rejected_total")]
            # nothing dropped: no message failed, none found the inbox full
            assert all(ln.endswith(" 0.0") for ln in rejected), rejected
    finally:
        pg.destroy()


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, check=False)
    return r.returncode == 0


@contextmanager
def small_disk(tmp: Path, size: str = "64m") -> Iterator[Path]:
    folder = tmp / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(folder, size):
        pytest.skip("needs root to mount a small file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_disk_full(tmp_path: Path) -> None:
    """The data folder's disk fills: writes get a coded 503, an alert opens, a bulletin due
    meanwhile and an emergency both air, and both are recorded once space returns."""
    with small_disk(tmp_path) as disk, Station.open(tmp_path, data_dir=disk / "data") as st:
        due, _start = st.schedule(LEAD_S + 6)
        filler = _fill(disk)
        status, body = st.api.post("/api/v1/contents/tts", {"text": "Một thông báo mới."})
        assert status == 503 and body["code"] == "storage_unavailable", body
        assert body["params"]["reason"] == "disk_full"
        alerts = st.api.get("/api/v1/alerts")
        assert any(a["code"] == "storage_disk_full" for a in alerts), alerts
        # the bulletin due meanwhile airs everywhere...
        wait_for(lambda: len(st.plays(due)) == CLUSTERS, LEAD_S + 40, "the due bulletin aired")
        # ...and so does an emergency, which says it is on the air but not yet recorded
        status, body = st.api.post("/api/v1/broadcasts", {
            "content_id": st.content_id, "priority": "emergency",
            "targets": {"areas": [COMMUNE]}})
        assert status == 503 and body["code"] == "storage_unavailable", body
        assert body["params"]["on_air"] is True
        emergency = body["params"]["broadcast_id"]
        wait_for(lambda: len(st.plays(emergency)) == CLUSTERS, 40, "the emergency aired")
        assert st.api.call("GET", f"/api/v1/broadcasts/{emergency}")[0] == 404
        filler.unlink()  # space returns
        st.check(due)
        st.check(emergency)
        history = st.api.get("/api/v1/alerts?status=resolved")
        assert any(a["code"] == "storage_disk_full" for a in history), history


def test_read_only_data_folder_starts_degraded_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        broker = Broker(tmp_path).start()
        settings = make_settings(disk / "data", broker)
        seed(settings, load_fixture("huong-dao"))
        ctl = ControllerProcess(settings, ENV, log=tmp_path / "controller.log")
        try:
            ctl.start()  # once, to make its files
            ctl.stop()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            ctl.start()
            api = HttpApi(ctl.base)
            status, body = api.call("GET", "/healthz")
            assert status == 503 and body["status"] == "degraded", body
            assert body["storage"]["params"]["reason"] == "read_only", body
            status, body = api.call("POST", "/api/v1/auth/token")
            assert status == 503 and body["code"] == "storage_unavailable", body
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
            wait_for(lambda: api.call("GET", "/healthz")[0] == 200, 20, "the controller running")
            api.login()
            assert len(api.get("/api/v1/clusters")) == CLUSTERS
            assert "Traceback" not in (tmp_path / "controller.log").read_text()
        finally:
            ctl.stop()
            broker.kill()


# --- a cluster ----------------------------------------------------------------------------


def test_cluster_offline_across_its_start_corrects_the_record(tmp_path: Path) -> None:
    """A cluster holds the bulletin, loses its link before the start, plays it anyway and
    comes back after the controller has given up on its report: its `played` corrects
    the record, and the correction is kept."""
    with Station.open(tmp_path, in_process_sim=True) as st:
        assert st.sim_thread is not None
        bc, _start = st.schedule(LEAD_S + 3)
        lost = "hd-c03"
        board = st.sim_thread.by_id(lost)

        def state() -> str:
            b = st.api.get(f"/api/v1/broadcasts/{bc}")
            return next((d["state"] for d in b["deliveries"] if d["cluster_id"] == lost), "")

        wait_for(lambda: state() == "ready", LEAD_S + 10, "the cluster ready")
        st.sim_thread.call(lambda: board.inject("fading_signal", {"db_per_min": 1e6}))
        # the controller gives up on its report (report grace 5 s after the end)...
        wait_for(lambda: state() in ("failed", "missed"), st.duration_s + 30,
                 "the controller's conclusion")
        st.sim_thread.call(lambda: board.clear("fading_signal"))  # ...then it is back
        b = st.check(bc)
        d = next(d for d in b["deliveries"] if d["cluster_id"] == lost)
        assert d["corrected_from"] and d["corrected_from"].startswith("failed"), d
        assert not d["assumed"]


# --- two controllers ----------------------------------------------------------------------


def test_a_second_controller_on_the_same_database_refuses_to_start(
        tmp_path: Path, db_url: str) -> None:
    broker = Broker(tmp_path).start()
    settings = make_settings(tmp_path / "data", broker, db_url)
    seed(settings, load_fixture("huong-dao"))
    first = ControllerProcess(settings, ENV, log=tmp_path / "first.log").start()
    try:
        second = ControllerProcess(settings, ENV, log=tmp_path / "second.log")
        with second.log.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "serve", "--port", str(second.port)],
                env=second.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        assert proc.wait(60) != 0
        assert not port_open(second.port)
        out = second.log.read_text()
        assert "another controller holds" in out, out
        assert "Traceback" not in out, out
        assert HttpApi(first.base).login().get("/api/v1/clusters")  # the first one runs on
    finally:
        first.stop()
        broker.kill()


@contextmanager
def active_and_standby(tmp: Path, db_url: str) -> Iterator[tuple[Station, ControllerProcess,
                                                                 FirstUp]]:
    """Two controllers on one database behind one address: the first active, the second
    ``loa serve --standby``; the simulated commune recording what it plays."""
    broker = Broker(tmp).start()
    settings = make_settings(tmp / "data", broker, db_url)
    seed(settings, load_fixture("huong-dao"))
    first = ControllerProcess(settings, ENV, log=tmp / "first.log").start()
    second = ControllerProcess(settings, ENV, log=tmp / "second.log", standby=True).start()
    proxy = FirstUp([first.port, second.port])
    st = Station(tmp, broker, first, HttpApi(proxy.base).login(), tmp / "played")
    try:
        wait_for(lambda: "standby" in second.log.read_text(), 30, "the second one waiting")
        st.start_sim()
        wait_for(lambda: st.online() == CLUSTERS, 30, "15 clusters online")
        status, content = st.api.post("/api/v1/contents/tts", {"text": TEXT})
        assert status == 201, content
        st.content_id = content["id"]
        yield st, second, proxy
    finally:
        st.stop_sim()
        proxy.close()
        second.stop()
        first.stop()
        broker.kill()


def _fail_over(st: Station, second: ControllerProcess) -> float:
    """Kill the active controller; how long until the standby answers in its place."""
    killed = time.monotonic()
    st.ctl.kill()
    wait_for(lambda: port_open(second.port), 30, "the standby listening")
    wait_for(lambda: _try(lambda: st.api.call("GET", "/api/v1/clusters")[0]) == 200, 30,
             "the API answering through the balancer")
    took = time.monotonic() - killed
    print(f"failover: the standby answered {took:.1f} s after the active one was killed")
    return took


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_standby_takes_over_a_scheduled_dispatch(tmp_path: Path, db_url: str) -> None:
    """The active controller is killed 1 s before it would send a scheduled bulletin: the
    standby becomes the controller, sends it, and every cluster plays it once, on time."""
    with active_and_standby(tmp_path, db_url) as (st, second, _proxy):
        bc, start = st.schedule(LEAD_S + 8)
        _kill_after(st, start - timedelta(seconds=LEAD_S + 1))
        took = _fail_over(st, second)
        assert took < 10
        b = st.check(bc)
        assert len(b["occurrences"]) == 1  # sent once, by the standby
        late = [d for d in b["deliveries"]
                if datetime.fromisoformat(d["started_at"]) - start > timedelta(seconds=1)]
        assert not late, late  # sent by the standby ahead of its start, not after it


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_standby_finishes_an_emergency_whose_controller_died_in_its_fan_out(
        tmp_path: Path, db_url: str) -> None:
    """An emergency's play is on the broker and the clusters are fetching its audio when
    the active controller is killed: the standby takes over, serves the audio, and records
    every play (the broker kept the clusters' reports for the controller's session)."""
    with active_and_standby(tmp_path, db_url) as (st, second, _proxy):
        commands = Watcher(st.broker.port, topics.area_cmd(COMMUNE))
        try:
            status, bc = st.api.post("/api/v1/broadcasts", {
                "content_id": st.content_id, "priority": "emergency",
                "targets": {"areas": [COMMUNE]}})
            assert status == 201, bc
            wait_for(lambda: commands.got, 15, "the emergency's play on the broker")
        finally:
            commands.close()
        assert _fail_over(st, second) < 10
        st.check(bc["id"])


# --- a clustered broker -------------------------------------------------------------------


@dataclass
class _Nodes:
    url: str  # (what sim_process reads: every node, comma-separated)


@needs_nats
@pytest.mark.parametrize("moment", [
    "none",
    pytest.param("playing", marks=pytest.mark.skipif(
        not os.environ.get("LOA_TEST_NATS_NODE_LOSS"),
        reason="NATS 2.9.10 does not recover its MQTT subscriptions after losing a node "
               "(docs/scaling.md, 'A clustered broker'); LOA_TEST_NATS_NODE_LOSS=1 runs it")),
])
@pytest.mark.timeout(400)
def test_a_bulletin_on_a_clustered_broker(tmp_path: Path, moment: str) -> None:
    """Three NATS nodes; the boards know all three and sit on the first, the controller on
    the second, so every command, chunk, report, retained status and Will crosses between
    nodes: every cluster plays once and the API records every play. With a node lost
    (``playing``: the boards' node killed 1 s into the bulletin) the boards should move to
    another node and report; on NATS 2.9.10 they cannot subscribe again there."""
    nodes = NatsCluster(tmp_path / "nats").start()
    ctl = None
    st = None
    try:
        settings = make_settings(tmp_path / "data", nodes,  # type: ignore[arg-type]
                                 mqtt_url=nodes.url_of(1), mqtt_protocol="3.1.1")
        seed(settings, load_fixture("huong-dao"))
        ctl = ControllerProcess(settings, {**ENV, "LOA_MQTT_PROTOCOL": "3.1.1"},
                                log=tmp_path / "controller.log").start()
        st = Station(tmp_path, None, ctl, HttpApi(ctl.base).login(),  # type: ignore[arg-type]
                     tmp_path / "played")
        st.sim = sim_process(_Nodes(nodes.url), settings.data_dir / "controller_ed25519.pub",  # type: ignore[arg-type]
                             2, "--fixture", "huong-dao", "--record-dir", str(st.played),
                             "--mqtt-protocol", "3.1.1", log=tmp_path / "sim.log")
        wait_for(lambda: st is not None and st.online() == CLUSTERS, 60, "15 clusters online")
        status, content = st.api.post("/api/v1/contents/tts", {"text": TEXT})
        assert status == 201, content
        st.content_id = content["id"]
        bc, start = st.schedule(LEAD_S + 4)
        if moment == "playing":
            _kill_after(st, start + timedelta(seconds=1))
            nodes.kill(0)
        st.check(bc, timeout=240)
    finally:
        if st is not None:
            st.stop_sim()
        if ctl is not None:
            ctl.stop()
        nodes.stop()
