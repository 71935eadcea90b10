"""Every refusal the API gives has a stable code and parameters (what the console and API
users translate from), an English message, and the status its kind calls for; every code
the product can give is listed in docs/errors.md. On the in-memory link: no broker."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from tests.utils.commune import memory_commune

COMMUNE = "vn-vp-tamduong-huongdao"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    with memory_commune(tmp_path_factory.mktemp("errors")) as (client, _link):
        yield client  # type: ignore[misc]


def coded(r: object, status: int, code: str) -> dict:
    body = r.json()  # type: ignore[attr-defined]
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert body["code"] == code and isinstance(body["params"], dict), body
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_no_token_and_a_bad_token_are_told_apart(api: TestClient) -> None:
    anonymous = TestClient(api.app)
    coded(anonymous.get("/api/v1/broadcasts"), 401, "not_authenticated")
    r = anonymous.get("/api/v1/broadcasts", headers={"Authorization": "Bearer nope"})
    assert coded(r, 401, "token_invalid") and r.headers["www-authenticate"] == "Bearer"
    r = anonymous.post("/api/v1/auth/token", data={"username": "admin", "password": "x"})
    coded(r, 401, "wrong_credentials")


def test_a_missing_thing_names_itself(api: TestClient) -> None:
    body = coded(api.get("/api/v1/broadcasts/nope"), 404, "broadcast_not_found")
    assert body["params"] == {"broadcast": "nope"}
    coded(api.get("/api/v1/no/such/path"), 404, "http_404")


def test_a_malformed_request_lists_each_field(api: TestClient) -> None:
    body = coded(api.post("/api/v1/broadcasts", json={"targets": {"areas": [3]},
                                                     "priority": "loud"}), 422,
                 "invalid_request")
    fields = {p["params"]["field"]: p["code"] for p in body["problems"]}
    assert fields.get("targets.areas.0") == "field_string_type", body
    assert "priority" in fields, body
    # what to play: a recording or a stream, one of them
    body = coded(api.post("/api/v1/broadcasts", json={"targets": {"areas": ["hd-v01"]}}),
                 422, "invalid_request")
    assert "content_id or source" in body["message"], body


def test_domain_refusals_carry_their_parameters(api: TestClient) -> None:
    body = coded(api.post("/api/v1/broadcasts", json={
        "content_id": "nope", "targets": {"areas": [COMMUNE]}}), 422, "content_unknown")
    assert body["params"] == {"content": "nope"}
    api.post("/api/v1/users", json={"username": "canbo", "password": "mat-khau-dai-1",
                                    "role": "officer", "area_id": COMMUNE})
    body = coded(api.post("/api/v1/users", json={
        "username": "canbo", "password": "mat-khau-dai-1", "role": "officer",
        "area_id": COMMUNE}), 409, "user_exists")
    assert body["params"] == {"username": "canbo"}


def test_quiet_hours_refusal_lists_each_rule_with_its_window(api: TestClient) -> None:
    r = api.put(f"/api/v1/areas/{COMMUNE}/policy",
                json={"quiet_hours": [{"start": "21:30", "end": "05:00"}]})
    assert r.status_code == 200, r.text
    content = api.post("/api/v1/contents/tts", json={"text": "Nhạc buổi sáng."}).json()["id"]
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    at = datetime.now(zone).replace(hour=4, minute=30, second=0, microsecond=0)
    if at <= datetime.now(zone):
        at += timedelta(days=1)
    body = coded(api.post("/api/v1/broadcasts", json={
        "content_id": content, "targets": {"areas": [COMMUNE]}, "start_at": at.isoformat()}),
        422, "policy_refused")
    assert body["problems"] and body["params"]["count"] == len(body["problems"])
    for problem in body["problems"]:  # one per village the item would play in
        assert problem["code"] == "quiet_hours"
        p = problem["params"]
        assert (p["start"], p["end"], p["at"]) == ("21:30", "05:00", "04:30")
        assert p["area"].startswith("hd-v") and p["area_name"] in problem["message"]


def test_every_code_the_product_gives_is_documented() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "controller").rglob("*.py"))
    raised = set(re.findall(
        r'\b(?:Invalid|NotFound|Forbidden|Conflict|Unauthorized|TooLarge|Unavailable|'
        r'TargetError|RecurrenceError|ActionError|Problem)\(\s*"([a-z0-9_]+)"', source))
    raised |= {"invalid_request", "http_404", "http_405"}
    assert len(raised) > 40  # the scan found the raise sites
    documented = set(re.findall(r"^\| `([a-z0-9_]+)`", (ROOT / "docs/errors.md").read_text(),
                                re.MULTILINE))
    assert not raised - documented, f"undocumented codes: {sorted(raised - documented)}"


def test_production_refuses_a_default_or_short_admin_password() -> None:
    import pytest
    from pydantic import ValidationError

    from controller.settings import Settings

    for weak in (None, "change-me", "short-pw"):
        with pytest.raises(ValidationError, match="LOA_ADMIN_PASSWORD"):
            Settings(env="production", admin_password=weak)
    assert Settings(env="production", admin_password="a-long-unguessable-one").env == "production"
