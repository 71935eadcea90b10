"""Accounts as an attacker and an admin meet them: guessing is locked out and throttled,
unknown names cost the same time as known ones, weak passwords are refused, sessions end on
logout, password change, disable and delete, access tokens are short and renewed once per
refresh token; and every one of these is in the audit log."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.utils.commune import ADMIN_PASSWORD, memory_commune

COMMUNE = "vn-vp-tamduong-huongdao"
GOOD = "Thon-Dong-Bong-2026"


def _login(api: Any, user: str, password: str) -> Any:
    return api.post("/api/v1/auth/token", data={"username": user, "password": password})


def _as(api: Any, user: str, password: str) -> TestClient:
    c = TestClient(api.app)
    r = _login(c, user, password)
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return c


def _user(api: Any, name: str, role: str = "officer", area: str | None = COMMUNE) -> None:
    r = api.post("/api/v1/users", json={"username": name, "password": GOOD, "role": role,
                                        "area_id": area})
    assert r.status_code == 201, r.text


def test_guessing_a_password_is_locked_out_and_an_admin_lifts_the_lock(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        _user(api, "canbo.hd")
        codes = [_login(api, "canbo.hd", f"guess-{i:04d}").status_code for i in range(60)]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        r = _login(api, "canbo.hd", GOOD)  # the right one, while locked
        assert r.status_code == 429 and r.json()["code"] == "login_locked"
        assert r.json()["params"]["retry_after_s"] > 800
        r = api.put("/api/v1/users/canbo.hd/password", json={"password": "Mat-khau-moi-2026"})
        assert r.status_code == 204, r.text
        assert _login(api, "canbo.hd", "Mat-khau-moi-2026").status_code == 200


def test_one_address_trying_many_names_is_throttled(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        codes = [_login(api, f"ten-{i}", "whatever-0000").status_code for i in range(25)]
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
        assert _login(api, "admin", ADMIN_PASSWORD).json()["code"] == "login_throttled"


def test_an_unknown_name_costs_as_long_as_a_wrong_password(tmp_path: Path) -> None:
    """Names cannot be told from the answer's time (it was 11 ms vs 91 ms)."""
    with memory_commune(tmp_path) as (api, _link):
        _user(api, "kythuat.hd", "technician")

        def median(user: str) -> float:
            times = []
            for i in range(5):
                t0 = time.perf_counter()
                assert _login(api, user, f"not-it-{i:04d}").status_code == 401
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

        known, unknown = median("kythuat.hd"), median("khong-co-ai")
        assert 0.33 < unknown / known < 3.0, (known, unknown)


def test_weak_passwords_are_refused_with_the_reason(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        for password, reason in [("short1", "shorter than 10"),
                                 ("password123", "most common"),
                                 ("canbo.xa-2026!", "account's name"),
                                 ("aaaaaaaaaaaa", "different characters")]:
            r = api.post("/api/v1/users", json={"username": "canbo.xa", "password": password,
                                                "role": "officer", "area_id": COMMUNE})
            assert r.status_code == 422 and r.json()["code"] == "password_weak", password
            assert reason in r.json()["message"], (password, r.text)


def test_sessions_end_on_logout_password_change_disable_and_delete(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        _user(api, "lanhdao.hd", "leader")
        a, b = _as(api, "lanhdao.hd", GOOD), _as(api, "lanhdao.hd", GOOD)
        assert a.post("/api/v1/auth/logout").status_code == 204
        assert a.get("/api/v1/users/me").status_code == 401
        assert b.get("/api/v1/users/me").status_code == 200  # another session goes on
        r = b.post("/api/v1/users/me/password", json={"current": GOOD,
                                                      "new": "Lanh-dao-moi-2026"})
        assert r.status_code == 204, r.text
        assert b.get("/api/v1/users/me").status_code == 401  # every session ended
        c = _as(api, "lanhdao.hd", "Lanh-dao-moi-2026")
        assert api.patch("/api/v1/users/lanhdao.hd", json={"disabled": True}).status_code == 200
        assert c.get("/api/v1/users/me").status_code == 401
        assert _login(api, "lanhdao.hd", "Lanh-dao-moi-2026").status_code == 401
        assert api.delete("/api/v1/users/lanhdao.hd").status_code == 204
        assert "lanhdao.hd" not in [u["username"] for u in api.get("/api/v1/users").json()]


def test_an_access_token_is_short_and_a_refresh_token_renews_it_once(tmp_path: Path) -> None:
    with memory_commune(tmp_path, token_ttl_s=60) as (api, _link):
        first = _login(api, "admin", ADMIN_PASSWORD).json()
        assert first["expires_in"] == 60 and first["refresh_expires_in"] == 12 * 3600
        r = api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200, r.text
        renewed = r.json()
        c = TestClient(api.app)
        c.headers["Authorization"] = f"Bearer {renewed['access_token']}"
        assert c.get("/api/v1/users/me").json()["username"] == "admin"
        r = api.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 401  # spent
        # a refresh token is not an access token
        c.headers["Authorization"] = f"Bearer {renewed['refresh_token']}"
        assert c.get("/api/v1/users/me").status_code == 401


def test_the_audit_log_says_who_did_what_from_where(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        _user(api, "canbo.hd")
        _user(api, "lanhdao.hd", "leader")
        assert _login(api, "canbo.hd", "not-the-password").status_code == 401
        officer = _as(api, "canbo.hd", GOOD)
        c = officer.post("/api/v1/contents/tts", json={"text": "Họp dân."}).json()["id"]
        r = officer.post("/api/v1/broadcasts", json={
            "content_id": c, "targets": {"areas": [COMMUNE]},
            "start_at": "2030-01-01T08:00:00+07:00"})
        bid = r.json()["id"]
        officer.post(f"/api/v1/broadcasts/{bid}/cancel")
        api.put(f"/api/v1/areas/{COMMUNE}/policy", json={"approval_required": False})
        officer.post("/api/v1/clusters/hd-c01/actions", json={"kind": "reboot"})  # refused
        leader = _as(api, "lanhdao.hd", GOOD)

        def entries(**q: Any) -> list[dict[str, Any]]:
            r = leader.get("/api/v1/audit", params=q)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        seen = {(e["username"], e["action"], e["status"]) for e in entries(limit=100)}
        assert ("canbo.hd", "login_failed", 401) in seen
        assert ("canbo.hd", "login", 200) in seen
        assert ("canbo.hd", "POST /api/v1/broadcasts", 201) in seen
        assert ("canbo.hd", "POST /api/v1/broadcasts/{broadcast_id}/cancel", 200) in seen
        assert ("canbo.hd", "POST /api/v1/clusters/{cluster_id}/actions", 403) in seen
        # the admin is national, not of this commune: the commune's leader does not see it
        assert not [e for e in entries(limit=100) if e["username"] == "admin"]
        national = {(e["username"], e["action"]) for e in api.get(
            "/api/v1/audit", params={"limit": 200}).json()}
        assert ("admin", "PUT /api/v1/areas/{area_id}/policy") in national
        assert ("admin", "POST /api/v1/users") in national
        cancel = entries(action="cancel")[0]
        assert cancel["target"] == bid and cancel["client"] == "testclient"
        csv = leader.get("/api/v1/audit", params={"format": "csv", "username": "canbo.hd"})
        assert csv.text.startswith("at,username,role,area_id,client,action,target,status")
        assert officer.get("/api/v1/audit").status_code == 403
        # a logout is attributed too (its token is revoked by the time the entry is written)
        assert officer.post("/api/v1/auth/logout").status_code == 204
        assert ("canbo.hd", "POST /api/v1/auth/logout") in {
            (e["username"], e["action"]) for e in entries(limit=20)}


def test_an_account_cannot_make_the_controller_prepare_audio_without_end(tmp_path: Path) -> None:
    with memory_commune(tmp_path, audio_burst=3, audio_per_hour=1) as (api, _link):
        codes = [api.post("/api/v1/contents/tts", json={"text": f"Thông báo số {i}."})
                 .status_code for i in range(5)]
        assert codes == [201, 201, 201, 429, 429]
        r = api.post("/api/v1/contents/tts", json={"text": "Thêm một."})
        assert r.json()["code"] == "rate_limited" and r.json()["params"]["retry_after_s"] > 60
        # another account has its own share
        _user(api, "canbo.hd")
        assert _as(api, "canbo.hd", GOOD).post("/api/v1/contents/tts", json={
            "text": "Của cán bộ."}).status_code == 201


def test_the_data_folder_and_database_are_the_controllers_alone(tmp_path: Path) -> None:
    import stat

    with memory_commune(tmp_path) as (_api, _link):
        assert stat.S_IMODE((tmp_path).stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "loa.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "controller_ed25519.key").stat().st_mode) == 0o600
