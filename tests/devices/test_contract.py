from __future__ import annotations

import json

import pytest

from devices import topics
from devices.areas import generate, load_fixture
from devices.messages import MessageError, parse_event, parse_status, parse_telemetry


def test_huong_dao_fixture_matches_the_commune() -> None:
    net = load_fixture("huong-dao")
    villages = [a for a in net.areas.values() if a.kind == "village"]
    assert len(villages) == 14
    assert len(net.clusters) == 15
    assert net.speaker_count == 30
    per_village = {v.id: sum(c.area_id == v.id for c in net.clusters.values()) for v in villages}
    assert sorted(per_village.values()) == [1] * 13 + [2]
    assert all(a.lat and a.lon for a in net.areas.values())
    assert [a.kind for a in net.ancestors(villages[0].id)] == [
        "village", "commune", "district", "province"]


def test_generated_province_has_requested_size() -> None:
    net = generate(40, 15)
    assert len(net.clusters) == 600
    assert sum(a.kind == "commune" for a in net.areas.values()) == 40


@pytest.mark.parametrize("bad", ["", "A", "a/b", "a+b", "#", "x" * 65])
def test_ids_that_would_break_topics_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        topics.area_cmd(bad)


def test_topic_parsing() -> None:
    t = topics.parse_cluster_topic("loa/v1/cluster/hd-c01/telemetry")
    assert t is not None and t.cluster_id == "hd-c01" and t.kind == "telemetry"
    assert topics.parse_cluster_topic("loa/v1/cluster/hd-c01/other") is None
    assert topics.parse_cluster_topic("loa/v2/cluster/hd-c01/status") is None
    assert topics.parse_content_topic(f"loa/v1/content/{'a' * 64}/3") == ("a" * 64, 3)


BIRTH = {"v": 1, "cluster_id": "hd-c01", "state": "online", "bd_seq": 3,
         "ts": "2026-11-21T05:00:00.000Z", "firmware": "x", "heartbeat_s": 30,
         "speakers": [{"index": 1, "state": "ok"}]}


def test_status_messages_parse() -> None:
    assert parse_status(json.dumps(BIRTH).encode()).bd_seq == 3
    death = parse_status(b'{"v":1,"cluster_id":"hd-c01","state":"offline","bd_seq":3}')
    assert death.state == "offline"


@pytest.mark.parametrize("payload", [
    b"", b"{", b"null", b'{"v":1}', json.dumps({**BIRTH, "bd_seq": "three"}).encode(),
    json.dumps({**BIRTH, "cluster_id": "../etc"}).encode(), b"x" * 70_000,
    json.dumps({**BIRTH, "ts": "2026-11-21T05:00:00"}).encode(),  # naive time
])
def test_invalid_messages_raise_message_error(payload: bytes) -> None:
    with pytest.raises(MessageError):
        parse_status(payload)
    with pytest.raises(MessageError):
        parse_telemetry(payload)
    with pytest.raises(MessageError):
        parse_event(payload)
