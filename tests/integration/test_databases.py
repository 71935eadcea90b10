"""The product on each database backend: migrations, health rules, a broadcast lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from firmware_sim.cluster import SimConfig
from firmware_sim.runner import load_verify_key

from controller.db.models import Cluster
from controller.db.seed import register_network
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.fleet.health import HealthTracker
from devices.areas import load_fixture
from devices.messages import Birth, Death, SpeakerReport
from tests.integration.harness import SimThread, make_settings, running_controller, seed
from tests.utils.broker import Broker, wait_for

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)


def birth(bd: int) -> Birth:
    return Birth(v=1, cluster_id="hd-c01", state="online", bd_seq=bd, ts=NOW, firmware="t",
                 heartbeat_s=30, speakers=[SpeakerReport(index=1, state="ok")])


def test_late_last_will_does_not_mark_a_live_cluster_offline(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    with sessions() as db:
        register_network(db, load_fixture("huong-dao"))
        h = HealthTracker()
        h.load(db)
        h.on_birth(db, birth(1), NOW)
        h.on_birth(db, birth(2), NOW + timedelta(seconds=1))  # reconnected
        # the broker delivers the first connection's Will after the new birth
        h.on_death(db, Death(v=1, cluster_id="hd-c01", state="offline", bd_seq=1),
                   NOW + timedelta(seconds=2))
        db.commit()
        assert db.get(Cluster, "hd-c01").state == "online"  # type: ignore[union-attr]
        h.on_death(db, Death(v=1, cluster_id="hd-c01", state="offline", bd_seq=2),
                   NOW + timedelta(seconds=3))
        db.commit()
        assert db.get(Cluster, "hd-c01").state == "offline"  # type: ignore[union-attr]
        assert h.counters["death_stale"] == 1
    engine.dispose()


def test_broadcast_lifecycle_on_each_backend(db_url: str, broker: Broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, broker, db_url=db_url)
    net = load_fixture("huong-dao")
    seed(settings, net)
    upgrade(settings.db_url)  # a second upgrade is a no-op
    with running_controller(settings) as api:
        sim = SimThread(net, SimConfig(port=broker.port, heartbeat_s=2,
                                       keys=[load_verify_key(tmp_path / "controller_ed25519.pub")]))
        sim.start()
        try:
            wait_for(lambda: all(c["state"] == "online" for c in api.get("/api/v1/clusters").json()),
                     20, "online")
            content = api.post("/api/v1/contents/tts", json={"text": "Kiểm tra cơ sở dữ liệu."}).json()
            start = datetime.now(UTC) + timedelta(seconds=3)
            bc = api.post("/api/v1/broadcasts", json={
                "content_id": content["id"], "targets": {"areas": ["hd-v05"], "clusters": ["hd-c10"]},
                "start_at": start.isoformat()}).json()
            done = wait_for(lambda: (b := api.get(f"/api/v1/broadcasts/{bc['id']}").json())
                            ["deliveries"] and all(d["state"] == "played" for d in b["deliveries"])
                            and b, 30, "played")
            assert sorted(d["cluster_id"] for d in done["deliveries"]) == ["hd-c06", "hd-c10"]
            # cancelling a finished one is refused; a future one is cancelled everywhere
            assert api.post(f"/api/v1/broadcasts/{bc['id']}/cancel").status_code in (200, 409)
            later = api.post("/api/v1/broadcasts", json={
                "content_id": content["id"], "targets": {"areas": ["vn-vp-tamduong-huongdao"]},
                "start_at": (datetime.now(UTC) + timedelta(seconds=20)).isoformat()}).json()
            wait_for(lambda: (ds := api.get(f"/api/v1/broadcasts/{later['id']}").json()
                              ["deliveries"]) and all(d["state"] == "ready" for d in ds),
                     10, "every cluster holding it")
            r = api.post(f"/api/v1/broadcasts/{later['id']}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            occ = r.json()["occurrence"]["id"]
            def states() -> dict[str, str]:
                return {c.id: c.player.occurrences[occ].state.value
                        if occ in c.player.occurrences else "-" for c in sim.clusters}

            try:
                wait_for(lambda: set(states().values()) == {"cancelled"}, 10,
                         "every cluster dropping it")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {states()} " + str(
                    [(c.id, c.commands_in, [(r.reason, r.detail) for r in c.refusals])
                     for c in sim.clusters])) from None
        finally:
            sim.stop()
