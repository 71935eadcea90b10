"""CAP alerts as a provincial disaster office writes them, on the in-memory link: areas by
polygon, circle, geocode and name; several <info> blocks; languages; recordings by <uri>;
an emergency in two parts; refusals answered with a CAP Error and leaving nothing behind."""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import struct
import threading
import time
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest

from audio import prepare_file
from controller.db.models import Content
from controller.transport.memory import MemoryLink
from devices import topics
from tests.utils.broker import wait_for
from tests.utils.commune import memory_commune

VN = ZoneInfo("Asia/Ho_Chi_Minh")
COMMUNE = "vn-vp-tamduong-huongdao"
SENDER = "kttv@vinhphuc.gov.vn"
WEST = "21.335,105.555 21.358,105.555 21.358,105.565 21.335,105.565 21.335,105.555"
WEST_CLUSTERS = ["hd-c01", "hd-c02", "hd-c03", "hd-c04", "hd-c05"]
ALL = [f"hd-c{i:02d}" for i in range(1, 16)]


def info(area: str, *, lang: str = "vi-VN", severity: str = "Moderate",
         urgency: str = "Expected", certainty: str = "Likely",
         headline: str = "Cảnh báo lũ trên sông Phó Đáy",
         description: str = "Mực nước sông Phó Đáy đang lên nhanh.",
         extra: str = "", expires_h: float = 6) -> str:
    exp = (datetime.now(VN) + timedelta(hours=expires_h)).replace(microsecond=0)
    return f"""
  <info>
    <language>{lang}</language>
    <category>Met</category>
    <event>Lũ</event>
    <urgency>{urgency}</urgency>
    <severity>{severity}</severity>
    <certainty>{certainty}</certainty>
    <expires>{exp.isoformat()}</expires>
    <headline>{headline}</headline>
    <description>{description}</description>{extra}
    {area}
  </info>"""


def alert(ident: str, *infos: str, msg_type: str = "Alert", refs: str = "",
          sender: str = SENDER, status: str = "Actual") -> bytes:
    sent = datetime.now(VN).replace(microsecond=0).isoformat()
    ref = f"\n  <references>{refs}</references>" if refs else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{ident}</identifier>
  <sender>{sender}</sender>
  <sent>{sent}</sent>
  <status>{status}</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>{ref}{''.join(infos)}
</alert>""".encode()


EMERGENCY = {"severity": "Extreme", "urgency": "Immediate", "certainty": "Observed"}


def post(api: Any, body: bytes, **headers: str) -> Any:
    return api.post("/api/v1/cap", content=body,
                    headers={"Content-Type": "application/xml", **headers})


def clusters_of(api: Any, bid: str, part: int = 0) -> list[str]:
    b = api.get(f"/api/v1/broadcasts/{bid}").json()
    occ = b["occurrences"][part]["id"]
    rt = api.app.state.runtime
    from controller.db.models import Delivery

    with rt.sessions() as db:
        return sorted(db.scalars(
            Delivery.__table__.select().with_only_columns(Delivery.cluster_id)
            .where(Delivery.occurrence_id == occ)))


def contents(api: Any) -> int:
    with api.app.state.runtime.sessions() as db:
        return db.query(Content).count()


def tone(seconds: float, hz: float = 440.0) -> bytes:
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i
                                                                        / 16_000)))
                               for i in range(int(seconds * 16_000))))
    return buf.getvalue()


class Files(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str, bytes, float]]] = {}

    def do_GET(self) -> None:
        code, kind, body, delay = self.routes.get(self.path, (404, "text/plain", b"no", 0))
        time.sleep(delay)
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files() -> Iterator[str]:
    """A web server on loopback, as a disaster agency's file server would be."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def resource(uri: str, digest: str | None = None) -> str:
    d = f"<digest>{digest}</digest>" if digest else ""
    return (f"\n    <resource><resourceDesc>bản ghi âm</resourceDesc>"
            f"<mimeType>audio/wav</mimeType><uri>{uri}</uri>{d}</resource>")


def _plays(link: MemoryLink) -> list[dict[str, Any]]:
    out = []
    for m in link.published:
        if "/cmd" not in m.topic:
            continue
        cmd = json.loads(m.payload)
        if cmd.get("kind") == "play":
            out.append(cmd["body"])
    return out


# --- areas -------------------------------------------------------------------------------------

def test_a_polygon_alert_airs_exactly_in_the_clusters_inside_it(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        r = post(api, alert("VP-POLY-1", info(f"<area><areaDesc>Ven sông Phó Đáy</areaDesc>"
                                               f"<polygon>{WEST}</polygon></area>",
                                               severity="Severe", urgency="Immediate")))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["broadcasts"][0]["clusters"] == 5
        assert clusters_of(api, body["broadcast_id"]) == WEST_CLUSTERS


def test_a_circle_and_a_geocode_in_one_area_are_unioned(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        area = ("<area><areaDesc>Quanh trạm bơm và thôn 10</areaDesc>"
                "<circle>21.3682,105.5814 0.3</circle>"
                "<geocode><valueName>LOA</valueName><value>hd-v10</value></geocode></area>")
        r = post(api, alert("VP-CIRC-1", info(area, severity="Severe", urgency="Immediate")))
        assert r.status_code == 201, r.text
        assert clusters_of(api, r.json()["broadcast_id"]) == ["hd-c11", "hd-c15"]


def test_a_geocode_the_operator_maps_names_our_area(tmp_path: Path) -> None:
    mapping = {"VN-DVHC": {"09034": COMMUNE}}
    with memory_commune(tmp_path, cap_geocodes=mapping) as (api, _link):
        area = ("<area><areaDesc>Hướng Đạo</areaDesc><geocode><valueName>VN-DVHC</valueName>"
                "<value>09034</value></geocode></area>")
        r = post(api, alert("VP-GEO-1", info(area, severity="Severe", urgency="Immediate")))
        assert r.status_code == 201, r.text
        assert r.json()["broadcasts"][0]["targets"]["areas"] == [COMMUNE]
        assert clusters_of(api, r.json()["broadcast_id"]) == ALL


def test_a_two_block_alert_warns_both_areas_each_at_its_own_priority(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        west = info(f"<area><areaDesc>Ven sông</areaDesc><polygon>{WEST}</polygon></area>",
                    headline="Lũ quét ven sông Phó Đáy", **EMERGENCY)
        village = info("<area><areaDesc>Thôn Đồng Giang</areaDesc></area>",
                       headline="Nguy cơ sạt lở ở thôn Đồng Giang")  # hd-v03 = hd-c04
        east = info("<area><areaDesc>Thôn 14</areaDesc><geocode><valueName>LOA</valueName>"
                    "<value>hd-v14</value></geocode></area>", headline="Mưa lớn ở thôn 14")
        r = post(api, alert("VP-TWO-1", west, village, east))
        assert r.status_code == 201, r.text
        got = {tuple(b["blocks"]): b for b in r.json()["broadcasts"]}
        # hd-c04 is in the polygon and in Đồng Giang: it hears both blocks, in order, at the
        # higher priority; the rest of the west hears the first; thôn 14 hears the third
        assert sorted(got) == [(0,), (0, 1), (2,)]
        assert got[(0,)]["priority"] == got[(0, 1)]["priority"] == "emergency"
        assert got[(2,)]["priority"] == "priority"
        assert clusters_of(api, got[(0, 1)]["broadcast_id"]) == ["hd-c04"]
        assert clusters_of(api, got[(0,)]["broadcast_id"]) == ["hd-c01", "hd-c02", "hd-c03",
                                                               "hd-c05"]
        start = datetime.fromisoformat(api.get(
            f"/api/v1/broadcasts/{got[(2,)]['broadcast_id']}").json()["start_at"])
        assert start > datetime.now(VN)  # scheduled, not on the air
        assert "Thôn Đồng Giang" in r.json()["ack"] and "Thôn Vĩnh Tường: read in vi-VN" in r.json()["ack"]


def test_areas_outside_ours_are_named_and_nothing_airs_where_nothing_matches(
        tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        both = ("<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"
                "<area><areaDesc>Huyện Lập Thạch</areaDesc></area>")
        r = post(api, alert("VP-OUT-1", info(both, **EMERGENCY)))
        assert r.status_code == 201, r.text
        assert "Huyện Lập Thạch" in " ".join(r.json()["notes"])
        before = contents(api)
        far = "<area><areaDesc>Biển Đông</areaDesc><circle>15.0,112.0 50</circle></area>"
        r = post(api, alert("VP-OUT-2", info(far, **EMERGENCY)))
        assert r.status_code == 422 and r.json()["code"] == "cap_area_unmatched"
        assert "<msgType>Error</msgType>" in r.json()["cap_error"]
        assert f"{SENDER},VP-OUT-2," in r.json()["cap_error"]
        assert contents(api) == before


# --- languages -----------------------------------------------------------------------------------

def test_a_translation_airs_only_where_no_block_in_our_language_reaches(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        commune = "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"
        r = post(api, alert("VP-LANG-1", info(commune), info(
            commune, lang="en-US", headline="Flood warning on the Pho Day river",
            description="The river is rising fast.")))
        assert r.status_code == 201, r.text
        assert [b["blocks"] for b in r.json()["broadcasts"]] == [[0]]
        assert any("info 2 (en-US) is not aired" in n for n in r.json()["notes"])
        # where only the English block reaches, it airs, in English
        village = "<area><areaDesc>Thôn Đồng Bông</areaDesc></area>"
        r = post(api, alert("VP-LANG-2", info(village), info(
            commune, lang="en-US", headline="Flood warning", description="Move uphill.")))
        got = {tuple(b["blocks"]): b for b in r.json()["broadcasts"]}
        assert got[(1,)]["clusters"] == 13 and got[(0,)]["clusters"] == 2
        assert "read in en-US (voice en-us)" in got[(1,)]["read_as"]


def test_a_station_that_airs_two_languages_reads_both_in_order(tmp_path: Path) -> None:
    with memory_commune(tmp_path, cap_languages=["vi", "en"]) as (api, _link):
        commune = "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"
        r = post(api, alert("VP-LANG-3", info(commune, lang="en-US", headline="Flood"),
                            info(commune)))
        assert r.status_code == 201, r.text
        b = r.json()["broadcasts"]
        assert [x["blocks"] for x in b] == [[1, 0]]  # Vietnamese first, then English
        assert "read in vi-VN" in b[0]["read_as"] and "read in en-US" in b[0]["read_as"]


# --- recordings ------------------------------------------------------------------------------------

def test_a_recording_named_by_uri_is_what_airs(tmp_path: Path, files: str) -> None:
    wav = tone(3.0)
    Files.routes["/ban-tin.wav"] = (200, "audio/wav", wav, 0)
    with memory_commune(tmp_path) as (api, _link):
        rt = api.app.state.runtime
        r = post(api, alert("VP-URI-1", info(
            "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>",
            extra=resource(f"{files}/ban-tin.wav", hashlib.sha1(wav).hexdigest()))))
        assert r.status_code == 201, r.text
        assert r.json()["read_as"] == f"its recording ({files}/ban-tin.wav)"
        b = api.get(f"/api/v1/broadcasts/{r.json()['broadcast_id']}").json()
        with rt.sessions() as db:
            aired = db.get(Content, b["content_id"])
            assert aired is not None
            # content-addressed and bit-exact: the recording itself, through the pipeline
            assert aired.sha256 == prepare_file(wav, rt.audio_settings(True)).sha256


@pytest.mark.parametrize("route,served,why", [
    ("/missing.wav", None, "HTTP 404"),
    ("/page.wav", (200, "text/html", b"<html>login</html>", 0), "text/html, not audio"),
    ("/tampered.wav", (200, "audio/wav", tone(1.0, 300), 0), "does not match"),
])
def test_a_recording_that_cannot_be_had_falls_back_to_speech_and_says_why(
        tmp_path: Path, files: str, route: str, served: Any, why: str) -> None:
    if served:
        Files.routes[route] = served
    with memory_commune(tmp_path) as (api, _link):
        r = post(api, alert("VP-URI-2", info(
            "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>",
            extra=resource(f"{files}{route}", hashlib.sha1(b"the original").hexdigest()))))
        assert r.status_code == 201, r.text
        said = r.json()["read_as"]
        assert f"recording {files}{route} not played" in said and why in said, said
        assert "read in vi-VN" in said and why in r.json()["ack"]


# --- an emergency in two parts ----------------------------------------------------------------------

def test_an_emergency_goes_on_air_with_its_headline_and_the_rest_follows(
        tmp_path: Path, files: str) -> None:
    wav = tone(2.0, 660)
    Files.routes["/khan-cap.wav"] = (200, "audio/wav", wav, 0.5)  # a slow server
    with memory_commune(tmp_path) as (api, link):
        rt = api.app.state.runtime
        r = post(api, alert("VP-EM-1", info(
            "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>", headline="Lũ quét khẩn cấp",
            extra=resource(f"{files}/khan-cap.wav"), **EMERGENCY)))
        assert r.status_code == 201, r.text
        bid = r.json()["broadcast_id"]
        first = [p for p in _plays(link) if p["broadcast_id"] == bid]
        assert len(first) == 1  # the headline is on its way already
        def parts() -> list[dict[str, Any]] | None:
            by_occ = {p["occurrence_id"]: p for p in _plays(link) if p["broadcast_id"] == bid}
            return list(by_occ.values()) if len(by_occ) == 2 else None

        head, rest = wait_for(parts, 20, "the second part")
        assert len([p for p in _plays(link) if p["broadcast_id"] == bid]) == 2  # once each
        assert rest["occurrence_id"] != head["occurrence_id"]
        head_end = datetime.fromisoformat(head["start_at"]) + timedelta(
            milliseconds=head["content"]["duration_ms"])
        assert datetime.fromisoformat(rest["start_at"]) >= head_end  # after, never over it
        settings = rt.audio_settings(True)
        from dataclasses import replace

        expect = prepare_file(wav, replace(settings, chime_before=False)).sha256
        assert rest["content"]["sha256"] == expect  # the recording, ending with the chime
        b = api.get(f"/api/v1/broadcasts/{bid}").json()
        assert [o["status"] for o in b["occurrences"]] == ["sent", "sent"]
        assert b["status"] == "active"
        # the area's content topic carries both parts' chunks (pushed, not requested)
        pushed = {m.topic.split("/")[-2] for m in link.sent_to(
            topics.area_content_filter(COMMUNE))}
        assert {head["content"]["sha256"], rest["content"]["sha256"]} <= pushed


def test_an_emergency_cancelled_while_its_rest_is_made_never_sends_the_rest(
        tmp_path: Path, files: str) -> None:
    Files.routes["/cham.wav"] = (200, "audio/wav", tone(1.0), 2.0)
    with memory_commune(tmp_path) as (api, link):
        r = post(api, alert("VP-EM-2", info(
            "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>",
            extra=resource(f"{files}/cham.wav"), **EMERGENCY)))
        assert r.status_code == 201, r.text
        bid = r.json()["broadcast_id"]
        c = post(api, alert("VP-EM-2C", msg_type="Cancel", refs=f"{SENDER},VP-EM-2,x"))
        assert c.status_code == 200, c.text
        assert [s["stopped"] for s in c.json()["stopped"]] == [True]
        time.sleep(3.0)  # the slow server answers after 2 s: the rest would be sent by now
        assert len([p for p in _plays(link) if p["broadcast_id"] == bid]) == 1
        b = api.get(f"/api/v1/broadcasts/{bid}").json()
        assert b["status"] == "cancelled"
        assert [o["status"] for o in b["occurrences"]] == ["cancelled", "cancelled"]


# --- references and refusals -----------------------------------------------------------------------

def test_references_match_exactly_and_only_the_senders_own(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        commune = "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"
        r = post(api, alert("VP-REF-1", info(commune)))
        assert r.status_code == 201, r.text
        bid = r.json()["broadcast_id"]
        for refs, sender in [("%,%,x", SENDER), (f"{SENDER},VP-REF-%,x", SENDER),
                             (f"{SENDER},VP-REF-1,x", "someone@else.vn")]:
            c = post(api, alert("VP-REF-C", msg_type="Cancel", refs=refs, sender=sender))
            assert c.status_code == 422 and c.json()["code"] == "cap_cancel_unknown", refs
        assert api.get(f"/api/v1/broadcasts/{bid}").json()["status"] in ("scheduled", "active")
        c = post(api, alert("VP-REF-C", msg_type="Cancel", refs=f"{SENDER},VP-REF-1,x"))
        assert c.status_code == 200
        assert api.get(f"/api/v1/broadcasts/{bid}").json()["status"] == "cancelled"


def test_a_refused_alert_answers_a_cap_error_and_leaves_no_audio(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        night = {"start": "00:00", "end": "23:59"}
        r = api.put(f"/api/v1/areas/{COMMUNE}/policy", json={"quiet_hours": [night]})
        assert r.status_code == 200, r.text
        before = contents(api)
        body = alert("VP-QUIET-1", info("<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"))
        r = post(api, body)
        assert r.status_code == 422 and r.json()["code"] == "policy_refused", r.text
        assert "policy_refused" in r.json()["cap_error"]
        assert contents(api) == before  # its speech was made, then rolled back
        r = post(api, body, Accept="application/cap+xml")
        assert r.status_code == 422 and r.headers["content-type"].startswith(
            "application/cap+xml")
        assert "<msgType>Error</msgType>" in r.text and "VP-QUIET-1" in r.text


def test_an_expired_block_is_dropped_with_a_note_and_all_expired_is_refused(
        tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        commune = "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"
        r = post(api, alert("VP-EXP-1", info(commune, expires_h=-1), info(commune)))
        assert r.status_code == 201, r.text
        assert [b["blocks"] for b in r.json()["broadcasts"]] == [[1]]
        assert "info 1 (vi-VN) expired: not aired" in r.json()["notes"]
        r = post(api, alert("VP-EXP-2", info(commune, expires_h=-1)))
        assert r.status_code == 422 and r.json()["code"] == "cap_expired"


def test_an_emergency_whose_rest_cannot_be_had_records_why(tmp_path: Path, files: str) -> None:
    with memory_commune(tmp_path) as (api, link):
        r = post(api, alert("VP-EM-3", info(
            "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>", description="",
            extra=resource(f"{files}/gone.wav"), **EMERGENCY)))
        assert r.status_code == 201, r.text
        bid = r.json()["broadcast_id"]

        def second() -> dict[str, Any] | None:
            occ = api.get(f"/api/v1/broadcasts/{bid}").json()["occurrences"]
            return occ[1] if len(occ) == 2 and occ[1]["status"] == "missed" else None

        missed = wait_for(second, 20, "the second part recorded missed")
        assert missed["summary"] == {"missed": 15} and missed["content_id"] is None
        rt = api.app.state.runtime
        from controller.db.models import Delivery

        with rt.sessions() as db:
            errors = set(db.scalars(Delivery.__table__.select().with_only_columns(
                Delivery.error).where(Delivery.occurrence_id == missed["id"])))
        assert errors == {("not sent: nothing more to say: its recording could not be had "
                          "and it has no text")}
        assert len([p for p in _plays(link) if p["broadcast_id"] == bid]) == 1


# --- the specification's own published examples --------------------------------------------------

SPEC = Path(__file__).parents[1] / "fixtures" / "cap"


def test_the_published_thunderstorm_warning_airs_where_its_polygon_is(tmp_path: Path) -> None:
    """CAP 1.2 Appendix A.2, as the US National Weather Service published it, against a
    station with one cluster inside its polygon and one just outside (its expiry moved
    to the future: the original expired in 2003)."""
    from controller.db.models import Area, Cluster

    later = (datetime.now(VN) + timedelta(hours=2)).replace(microsecond=0).isoformat()
    xml = (SPEC / "a2-severe-thunderstorm.xml").read_text().replace(
        "2003-06-17T16:00:00-07:00", later).encode()
    with memory_commune(tmp_path) as (api, _link):
        with api.app.state.runtime.sessions() as db:
            db.add(Area(id="us-ca-tuolumne", name="Tuolumne", kind="commune"))
            db.add_all([Cluster(id="ca-c01", area_id="us-ca-tuolumne", lat=38.49, lon=-119.93),
                        Cluster(id="ca-c02", area_id="us-ca-tuolumne", lat=38.30, lon=-120.20)])
            db.commit()
        r = post(api, xml)
        assert r.status_code == 201, r.text
        body = r.json()
        assert [b["targets"] for b in body["broadcasts"]] == [{"areas": [],
                                                               "clusters": ["ca-c01"]}]
        assert body["priority"] == "emergency"
        assert "read in en-US (voice en-us)" in body["read_as"]


def test_the_published_amber_alert_is_read_once_not_in_both_its_languages(
        tmp_path: Path) -> None:
    """CAP 1.2 Appendix A.4: the same Amber alert in English and Spanish. Its SAME county
    code is mapped to our commune; the station airs Vietnamese, which neither block is,
    so the warning is read once, in the first language a voice speaks."""
    xml = (SPEC / "a4-amber-multilingual.xml").read_bytes()
    with memory_commune(tmp_path, cap_geocodes={"SAME": {"006037": COMMUNE}}) as (api, _l):
        r = post(api, xml)
        assert r.status_code == 201, r.text
        body = r.json()
        assert [b["blocks"] for b in body["broadcasts"]] == [[0]]
        assert "info 2 (es-US) is a translation of info 1 (en-US): not aired" in body["notes"]
        assert clusters_of(api, body["broadcast_id"]) == ALL


def test_an_alert_received_twice_airs_once(tmp_path: Path) -> None:
    """A POST retried after a timeout, or a feed read twice: the same sender and identifier."""
    with memory_commune(tmp_path) as (api, link):
        body = alert("VP-DUP-1", info("<area><areaDesc>Xã Hướng Đạo</areaDesc></area>",
                                      **EMERGENCY))
        first = post(api, body)
        assert first.status_code == 201, first.text
        assert first.json()["broadcasts"][0]["parts"] == 2
        again = post(api, body)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["broadcast_ids"] == [first.json()["broadcast_id"]]
        assert "nothing was aired again" in again.json()["ack"]
        heads = [p for p in _plays(link) if p["revision"] == 0
                 and p["content"]["duration_ms"] < 10_000]
        assert len({p["broadcast_id"] for p in heads}) == 1


def test_an_emergency_block_airs_even_if_another_block_is_refused(tmp_path: Path) -> None:
    """Quiet hours refuse the priority block; the emergency block has aired already and
    is not taken back: the answer says which block did not air, and why."""
    with memory_commune(tmp_path) as (api, _link):
        r = api.put("/api/v1/areas/hd-v14/policy",
                    json={"quiet_hours": [{"start": "00:00", "end": "23:59"}]})
        assert r.status_code == 200, r.text
        west = info(f"<area><areaDesc>Ven sông</areaDesc><polygon>{WEST}</polygon></area>",
                    **EMERGENCY)
        east = info("<area><areaDesc>Thôn 14</areaDesc><geocode><valueName>LOA</valueName>"
                    "<value>hd-v14</value></geocode></area>")
        r = post(api, alert("VP-MIX-1", west, east))
        assert r.status_code == 201, r.text
        assert [b["blocks"] for b in r.json()["broadcasts"]] == [[0]]
        assert any("info 2 not aired on 1 cluster(s): policy_refused" in n
                   for n in r.json()["notes"])
        assert "policy_refused" in r.json()["ack"]


# --- the log of what was received and answered -----------------------------------------------------

def test_every_cap_document_and_its_reply_is_kept_for_the_senders_area(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    with memory_commune(tmp_path) as (api, _link):
        for name, area in (("lanhdao.hd", COMMUNE), ("canbo.thon", "hd-v01")):
            r = api.post("/api/v1/users", json={"username": name, "password": "Mat-khau-dai-2026",
                                                "role": "leader", "area_id": area})
            assert r.status_code == 201, r.text

        def login(name: str) -> TestClient:
            c = TestClient(api.app)
            tok = c.post("/api/v1/auth/token", data={"username": name,
                                                     "password": "Mat-khau-dai-2026"})
            c.headers["Authorization"] = f"Bearer {tok.json()['access_token']}"
            return c

        leader = login("lanhdao.hd")
        commune = "<area><areaDesc>Xã Hướng Đạo</areaDesc></area>"
        aired = post(leader, alert("VP-LOG-1", info(commune)))
        assert aired.status_code == 201, aired.text
        refused = post(leader, b"<alert>not CAP</alert>")
        assert refused.status_code == 422
        cancel = post(leader, alert("VP-LOG-1C", msg_type="Cancel", refs=f"{SENDER},VP-LOG-1,x"))
        assert cancel.status_code == 200, cancel.text

        got = leader.get("/api/v1/cap").json()
        assert got["total"] == 3
        newest, bad, first = got["items"]
        assert (first["identifier"], first["msg_type"], first["http_status"], first["code"]) == \
            ("VP-LOG-1", "Alert", 201, None)
        assert first["event"] == "Cảnh báo lũ trên sông Phó Đáy"
        assert first["outcome"]["broadcast_id"] == aired.json()["broadcast_id"]
        assert (bad["http_status"], bad["code"], bad["identifier"]) == (422, "cap_invalid", None)
        assert newest["msg_type"] == "Cancel"
        assert newest["outcome"]["cancelled"] == cancel.json()["cancelled"]
        full = leader.get(f"/api/v1/cap/{first['id']}").json()
        assert full["reply"] == aired.json()["ack"] and "<msgType>Ack</msgType>" in full["reply"]
        assert "<msgType>Error</msgType>" in leader.get(f"/api/v1/cap/{bad['id']}").json()["reply"]

        village = login("canbo.thon")  # below the sender's area: none of it
        assert village.get("/api/v1/cap").json() == {"total": 0, "items": []}
        r = village.get(f"/api/v1/cap/{first['id']}")
        assert r.status_code == 404 and r.json()["code"] == "cap_message_not_found"
        assert api.get("/api/v1/cap?limit=1").json()["total"] == 3  # a national admin: all
