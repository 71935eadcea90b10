from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from nacl.signing import SigningKey

from devices import topics
from devices.messages import RefusalReason
from devices.signing import CommandVerifier, Refused, sign_command

NOW = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)
TOPIC = topics.area_cmd("vn-vp-tamduong-huongdao")
KEY = SigningKey(b"\x01" * 32)


def play_body() -> dict[str, object]:
    return {
        "broadcast_id": "b1", "occurrence_id": "o1", "priority": "normal",
        "start_at": "2026-11-21T05:00:10.000Z",
        "content": {"sha256": "a" * 64, "size": 2000, "chunk_size": 16384, "chunks": 1,
                    "codec": "opus", "container": "ogg", "duration_ms": 1000},
    }


def signed(**kw: object) -> bytes:
    args: dict[str, object] = {"kind": "play", "topic": TOPIC, "body": play_body(),
                               "expires_at": NOW + timedelta(minutes=5), "issued_at": NOW}
    args.update(kw)
    return sign_command(KEY, **args)  # type: ignore[arg-type]


def refusal(payload: bytes, topic: str = TOPIC, now: datetime = NOW,
            verifier: CommandVerifier | None = None) -> RefusalReason:
    v = verifier or CommandVerifier([KEY.verify_key])
    with pytest.raises(Refused) as exc:
        v.verify(payload, topic, now)
    return exc.value.reason


def test_valid_command_is_accepted_and_human_readable() -> None:
    payload = signed()
    obj = json.loads(payload)  # plain JSON a technician can read
    assert obj["kind"] == "play" and obj["topic"] == TOPIC and "sig" in obj
    cmd = CommandVerifier([KEY.verify_key]).verify(payload, TOPIC, NOW)
    assert cmd.body["occurrence_id"] == "o1"


def test_unsigned_command_is_refused() -> None:
    obj = json.loads(signed())
    del obj["sig"]
    assert refusal(json.dumps(obj).encode()) is RefusalReason.UNSIGNED


def test_tampered_command_is_refused() -> None:
    obj = json.loads(signed())
    obj["body"]["start_at"] = "2026-11-21T05:00:11.000Z"
    assert refusal(json.dumps(obj).encode()) is RefusalReason.BAD_SIGNATURE


def test_command_signed_by_another_key_is_refused() -> None:
    other = sign_command(SigningKey.generate(), kind="play", topic=TOPIC, body=play_body(),
                         expires_at=NOW + timedelta(minutes=5), issued_at=NOW)
    assert refusal(other) is RefusalReason.UNKNOWN_KEY


def test_signature_with_wrong_key_id_claim_is_refused() -> None:
    obj = json.loads(signed())
    obj["sig"] = base64.b64encode(b"\0" * 64).decode()
    assert refusal(json.dumps(obj).encode()) is RefusalReason.BAD_SIGNATURE


def test_replayed_command_is_refused() -> None:
    v = CommandVerifier([KEY.verify_key])
    payload = signed()
    v.verify(payload, TOPIC, NOW)
    assert refusal(payload, verifier=v, now=NOW + timedelta(seconds=5)) is RefusalReason.REPLAYED


def test_expired_command_is_refused() -> None:
    assert refusal(signed(), now=NOW + timedelta(minutes=6)) is RefusalReason.EXPIRED


def test_command_from_the_future_is_refused() -> None:
    assert refusal(signed(issued_at=NOW + timedelta(minutes=2),
                          expires_at=NOW + timedelta(minutes=9))) is RefusalReason.NOT_YET_VALID


def test_command_moved_to_another_topic_is_refused() -> None:
    other_topic = topics.cluster_cmd("hd-c01")
    assert refusal(signed(), topic=other_topic) is RefusalReason.WRONG_TOPIC


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b'{"v":2}', b"\xff\xfe",
                                     b'{"v":1,"sig":"x","key_id":["list"]}'])
def test_garbage_is_refused_not_crashing(payload: bytes) -> None:
    assert refusal(payload) in (RefusalReason.MALFORMED, RefusalReason.UNSUPPORTED_VERSION,
                                RefusalReason.UNKNOWN_KEY, RefusalReason.UNSIGNED)


def test_signed_but_invalid_body_is_refused_as_malformed() -> None:
    body = play_body()
    body["content"] = {"sha256": "not-a-sha"}
    assert refusal(signed(body=body)) is RefusalReason.MALFORMED


def test_overlong_lifetime_is_refused() -> None:
    assert refusal(signed(expires_at=NOW + timedelta(days=3))) is RefusalReason.MALFORMED


def test_canonical_form_is_independent_of_key_order() -> None:
    obj = json.loads(signed())
    reordered = {k: obj[k] for k in sorted(obj, reverse=True)}
    CommandVerifier([KEY.verify_key]).verify(json.dumps(reordered, indent=2).encode(), TOPIC, NOW)


def test_a_shared_memo_checks_each_payload_once_but_every_cluster_keeps_its_own_rules() -> None:
    """Many simulated clusters share the signature and schema checks of one payload; the
    topic, clock, replay and body checks, and their order, stay each cluster's own."""
    memo: dict = {}
    a, b, c = (CommandVerifier([KEY.verify_key], memo=memo) for _ in range(3))
    payload = signed()
    assert a.verify(payload, TOPIC, NOW).body["occurrence_id"] == "o1"
    assert len(memo) == 1
    # b has not seen it: accepted (its own replay guard), then refused as a replay
    assert b.verify(payload, TOPIC, NOW).id == json.loads(payload)["id"]
    assert refusal(payload, verifier=b) is RefusalReason.REPLAYED
    # c's clock is past the expiry; on another topic the topic check comes first
    assert refusal(payload, verifier=c, now=NOW + timedelta(minutes=6)) is RefusalReason.EXPIRED
    assert refusal(payload, topic=topics.cluster_cmd("hd-c01"),
                   verifier=c) is RefusalReason.WRONG_TOPIC
    # a tampered copy is another payload: refused for everyone, and stays refused
    obj = json.loads(payload)
    obj["body"]["start_at"] = "2026-11-21T05:00:11.000Z"
    tampered = json.dumps(obj).encode()
    assert refusal(tampered, verifier=a) is RefusalReason.BAD_SIGNATURE
    assert refusal(tampered, verifier=c) is RefusalReason.BAD_SIGNATURE
    # an expired command with a bad body: expired first, as the protocol orders the checks
    bad = signed(body={"broadcast_id": "b1"})
    assert refusal(bad, verifier=a, now=NOW + timedelta(minutes=6)) is RefusalReason.EXPIRED
    assert refusal(bad, verifier=b) is RefusalReason.MALFORMED


def test_the_memo_stays_bounded() -> None:
    memo: dict = {}
    v = CommandVerifier([KEY.verify_key], memo=memo)
    for i in range(CommandVerifier.MEMO_SIZE + 50):
        v.verify(signed(body={**play_body(), "occurrence_id": f"o{i}"}), TOPIC, NOW)
    assert len(memo) == CommandVerifier.MEMO_SIZE
