"""What the controller believes of a board's word, on the in-memory link: a refusal counts
only for the command as it was sent and never undoes a confirmed play; a storm of refusals
raises an alert naming the board; one board's content requests are not amplified."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from devices import topics
from devices.messages import (
    ContentRequest,
    DeliveryEvent,
    DeliveryState,
    RefusalReason,
    RefusedEvent,
    dumps,
    now_utc,
)
from tests.utils.broker import wait_for
from tests.utils.commune import memory_commune

COMMUNE = "vn-vp-tamduong-huongdao"
_seq = itertools.count(1)


def _emergency(api: Any, link: Any) -> tuple[str, str, str, dict[str, Any]]:
    c = api.post("/api/v1/contents/tts", json={"text": "Thử."}).json()["id"]
    r = api.post("/api/v1/broadcasts", json={"content_id": c, "priority": "emergency",
                                             "targets": {"areas": [COMMUNE]}})
    assert r.status_code == 201, r.text
    [cmd] = [json.loads(m.payload) for m in link.sent_to(topics.area_cmd(COMMUNE))
             if json.loads(m.payload)["kind"] == "play"]
    return r.json()["id"], cmd["id"], cmd["body"]["occurrence_id"], cmd["body"]


def _send(link: Any, cluster: str, ev: Any) -> None:
    """As a message arrives from the broker (what the link sees on arrival, then the
    inbox)."""
    assert link.deliver(topics.cluster_event(cluster), dumps(ev))


def _states(api: Any, bid: str) -> dict[str, str]:
    return {d["cluster_id"]: d["state"]
            for d in api.get(f"/api/v1/broadcasts/{bid}").json()["deliveries"]}


def _refused(cluster: str, command_id: str, topic: str,
             reason: RefusalReason = RefusalReason.WRONG_TOPIC) -> RefusedEvent:
    return RefusedEvent(v=1, kind="refused", cluster_id=cluster, seq=next(_seq), ts=now_utc(),
                        command_id=command_id, topic=topic, reason=reason, detail="test")


def test_a_refusal_counts_only_for_the_command_as_sent_and_never_undoes_a_play(
        tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, link):
        bid, cmd_id, occ, _body = _emergency(api, link)
        # our genuine command, re-published by someone on hd-c01's own topic: hd-c01 refuses
        # it (wrong_topic) naming our command id; that proves nothing about our delivery
        _send(link, "hd-c01", _refused("hd-c01", cmd_id, topics.cluster_cmd("hd-c01")))
        # hd-c02 confirmed it is playing; then a refusal naming it arrives
        _send(link, "hd-c02", DeliveryEvent(
            v=1, kind="delivery", cluster_id="hd-c02", seq=next(_seq), ts=now_utc(),
            command_id=cmd_id, occurrence_id=occ, state=DeliveryState.PLAYING, at=now_utc(),
            revision=0))
        _send(link, "hd-c02", _refused("hd-c02", cmd_id, topics.area_cmd(COMMUNE),
                                       RefusalReason.EXPIRED))
        # hd-c03 genuinely refused our command as we sent it, before confirming anything
        _send(link, "hd-c03", _refused("hd-c03", cmd_id, topics.area_cmd(COMMUNE),
                                       RefusalReason.EXPIRED))
        def applied() -> dict[str, str] | None:
            s = _states(api, bid)
            return s if s["hd-c03"] == "failed" else None

        states = wait_for(applied, 10, "hd-c03's refusal applied")
        assert states["hd-c01"] == "sent"
        assert states["hd-c02"] == "playing"
        assert api.app.state.runtime.dispatcher.counters["refused_not_ours"] == 1


def test_a_storm_of_refusals_raises_a_tampering_alert_naming_the_board(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, link):
        for reason in [RefusalReason.BAD_SIGNATURE] * 3 + [RefusalReason.REPLAYED] * 2:
            _send(link, "hd-c07", _refused("hd-c07", "f" * 32, topics.cluster_cmd("hd-c07"),
                                           reason))

        def alert() -> dict[str, Any] | None:
            got = api.get("/api/v1/alerts", params={"status": "open",
                                                    "code": "possible_tampering"}).json()
            return got[0] if got else None

        a = wait_for(alert, 10, "a possible_tampering alert")
        assert a["cluster_id"] == "hd-c07" and a["severity"] == "critical"
        assert "bad_signature ×3" in a["message"] and "replayed ×2" in a["message"]


def test_one_boards_content_requests_are_not_amplified(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, link):
        _bid, _cmd, _occ, body = _emergency(api, link)
        sha, chunks = body["content"]["sha256"], body["content"]["chunks"]
        rt = api.app.state.runtime
        before = len(link.sent_to(topics.content_chunks_filter(sha)))
        for _ in range(200):  # one board asking for every chunk, again and again
            _send(link, "hd-c05", ContentRequest(v=1, kind="content_request",
                                                 cluster_id="hd-c05", seq=next(_seq),
                                                 ts=now_utc(), sha256=sha,
                                                 missing=list(range(chunks))))
        wait_for(lambda: rt.ingest.rejected["content_request_limited"] >= 150, 10,
                 "the requests past the limit dropped")
        sent = len(link.sent_to(topics.content_chunks_filter(sha))) - before
        assert sent <= 25 * chunks  # the burst at most, not 200 copies


def test_a_cancelled_delivery_reported_played_is_recorded_and_raises_an_alert(
        tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, link):
        bid, cmd_id, occ, _body = _emergency(api, link)
        assert api.post(f"/api/v1/broadcasts/{bid}/cancel").status_code == 200
        _send(link, "hd-c09", DeliveryEvent(
            v=1, kind="delivery", cluster_id="hd-c09", seq=next(_seq), ts=now_utc(),
            command_id=cmd_id, occurrence_id=occ, state=DeliveryState.PLAYED, at=now_utc(),
            revision=0))

        def alert() -> dict[str, Any] | None:
            got = api.get("/api/v1/alerts", params={"status": "open",
                                                    "code": "played_after_cancel"}).json()
            return got[0] if got else None

        a = wait_for(alert, 10, "a played_after_cancel alert")
        assert a["cluster_id"] == "hd-c09" and occ in a["message"]
        # the record tells the truth: it played, and it was cancelled before
        d = next(d for d in api.get(f"/api/v1/broadcasts/{bid}").json()["deliveries"]
                 if d["cluster_id"] == "hd-c09")
        assert d["state"] == "played" and d["corrected_from"].startswith("cancelled")
