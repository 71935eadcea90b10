"""The fleet paged by the server (a province has thousands of boards): filters for state, an
area and everything beneath it, a cause, a search that ignores accents; the broken first; the
summary counts an offline board's speakers as not working. A broadcast's deliveries come
one page at a time too."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from controller.db.models import Cluster, Speaker
from controller.db.session import make_engine, make_sessionmaker
from controller.settings import Settings
from tests.utils.commune import memory_commune, new_account

COMMUNE = "vn-vp-tamduong-huongdao"


def _states(tmp: Path, **states: str) -> None:
    engine = make_engine(Settings(data_dir=tmp).db_url)
    with make_sessionmaker(engine)() as db:
        db.execute(update(Cluster).values(state="online", causes=None))
        for cid, st in states.items():
            causes = [{"code": "speaker_open", "subject": "speaker 2"}] if st == "degraded" else None
            db.execute(update(Cluster).where(Cluster.id == cid).values(state=st, causes=causes))
        db.execute(update(Speaker).values(state="ok"))
        db.execute(update(Speaker).where(Speaker.cluster_id == "hd-c05", Speaker.index == 2)
                   .values(state="open"))
        db.commit()
    engine.dispose()


def test_the_fleet_is_paged_filtered_and_summarised_by_the_server(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        _states(tmp_path, **{"hd-c03": "offline", "hd-c05": "degraded", "hd-c11": "offline"})
        first = api.get("/api/v1/fleet?limit=4").json()
        assert first["total"] == 15
        assert [c["id"] for c in first["items"]] == ["hd-c03", "hd-c11", "hd-c05", "hd-c01"]
        s = first["summary"]
        assert (s["total"], s["online"], s["states"]) == (
            15, 12, {"online": 12, "offline": 2, "degraded": 1})
        # 30 speakers; those of the 2 offline boards and the open horn are not working
        assert (s["speakers"], s["speakers_ok"]) == (30, 30 - 4 - 1)
        assert s["problems"] == [{"code": "speaker_open", "clusters": 1}]
        assert {a["area_id"] for a in s["areas"]} == {f"hd-v{i:02d}" for i in range(1, 15)}

        later = api.get("/api/v1/fleet?limit=4&offset=12").json()
        assert [c["id"] for c in later["items"]] == ["hd-c13", "hd-c14", "hd-c15"]
        assert api.get("/api/v1/fleet?state=offline").json()["total"] == 2
        assert [c["id"] for c in api.get("/api/v1/fleet?problem=speaker_open").json()["items"]] \
            == ["hd-c05"]
        # an area means everything beneath it; a search ignores accents and case
        assert api.get(f"/api/v1/fleet?area_id={COMMUNE}").json()["total"] == 15
        assert [c["id"] for c in api.get("/api/v1/fleet?area_id=hd-v01").json()["items"]] == [
            "hd-c01", "hd-c02"]
        assert [c["id"] for c in api.get("/api/v1/fleet?q=dong bong 2").json()["items"]] == [
            "hd-c02"]

        r = api.get("/api/v1/clusters?limit=5&offset=5")  # the plain list pages the same way
        assert r.headers["X-Total-Count"] == "15"
        assert [c["id"] for c in r.json()] == [f"hd-c{i:02d}" for i in range(6, 11)]
        assert len(api.get("/api/v1/clusters").json()) == 15  # without limit: a page of 1,000
        assert api.get("/api/v1/clusters?limit=1001").status_code == 422
        assert api.get("/api/v1/fleet?limit=0").status_code == 422


def test_a_broadcast_lists_its_deliveries_one_page_at_a_time(tmp_path: Path) -> None:
    """A province-wide bulletin has one delivery per cluster: the broadcast says how many and
    lists one page, by cluster id; the console asks for none (its roll-up is /report)."""
    with memory_commune(tmp_path) as (api, _link):
        c = api.post("/api/v1/contents/tts", json={"text": "Thử loa."}).json()["id"]
        b = api.post("/api/v1/broadcasts", json={"content_id": c, "priority": "emergency",
                                                 "targets": {"areas": [COMMUNE]}}).json()
        whole = api.get(f"/api/v1/broadcasts/{b['id']}").json()
        assert whole["deliveries_total"] == len(whole["deliveries"]) == 15
        page = api.get(f"/api/v1/broadcasts/{b['id']}?deliveries_limit=5"
                       "&deliveries_offset=10").json()
        assert page["deliveries_total"] == 15
        assert [d["cluster_id"] for d in page["deliveries"]] == [
            f"hd-c{i:02d}" for i in range(11, 16)]
        none = api.get(f"/api/v1/broadcasts/{b['id']}?deliveries_limit=0").json()
        assert none["deliveries"] == [] and none["deliveries_total"] == 15
        assert none["occurrence"]["summary"] == whole["occurrence"]["summary"]
        assert api.get(f"/api/v1/broadcasts/{b['id']}?deliveries_limit=5001").status_code == 422


def test_a_province_summary_counts_per_commune(tmp_path: Path) -> None:
    """300 villages with boards: the technician's summary counts the 20 communes (each with
    its 15 boards), not every village; a commune's own summary still lists its villages."""
    from devices.areas import generate

    net = generate(20, 15)
    with memory_commune(tmp_path, net) as (api, _link):
        areas = api.get("/api/v1/fleet?limit=1").json()["summary"]["areas"]
        communes = sorted(a.id for a in net.areas.values() if a.kind == "commune")
        assert [a["area_id"] for a in areas] == communes
        assert {a["clusters"] for a in areas} == {15}
        one = communes[0]
        tech = new_account(api, "kythuat", "Ky-thuat-2026", "technician", one)
        villages = tech.get("/api/v1/fleet?limit=1").json()["summary"]["areas"]
        assert len(villages) == 15 and all(a["clusters"] == 1 for a in villages)
        assert {net.areas[a["area_id"]].parent_id for a in villages} == {one}
