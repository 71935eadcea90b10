"""Every route of the API, fed what a careless client or an attacker sends (nothing, the
wrong type, a lone surrogate, a number too large, unknown ids, a path that does not
exist), answers with a coded refusal, never a 500."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.utils.commune import memory_commune

BODIES: list[bytes] = [
    b"", b"{}", b"[]", b'"x"', b"null", b"{", b'{"a": "\\ud800"}',
    b'{"content_id": 1e999, "targets": {"areas": ["\\ud800"]}, "start_at": "yesterday"}',
    b'{"kind": "set_volume", "params": {"volume_pct": 1e999}}',
    b'{"text": "\\ud800\\udfff\\u0000"}', b'{"username": [], "password": {}}',
    b'{"quiet_hours": [{"start": "25:61", "end": null}]}',
    b'{"id": "../../etc", "area_id": "x", "speakers": [{"index": -1}]}',
    b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>x</identifier></alert>",
]
PARAMS = {"cluster_id": ["hd-c01", "nope", "%ED%A0%80"], "area_id": ["hd-v01", "nope"],
          "broadcast_id": ["nope", "0" * 32], "content_id": ["nope"], "action_id": ["nope"],
          "alert_id": ["1", "-1", "99999999999999999999"], "username": ["admin", "nope"],
          "item_id": ["nope"], "device_id": ["nope"]}


def _paths(spec: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for template, ops in spec["paths"].items():
        names = re.findall(r"{(\w+)}", template)
        filled = [template]
        for n in names:
            filled = [f.replace("{" + n + "}", v) for f in filled for v in PARAMS.get(n, ["x"])]
        out += [(method.upper(), f) for method, op in ops.items() for f in filled
                if "text/event-stream" not in op.get("responses", {}).get("200", {})
                .get("content", {})]  # (a stream never ends: tests/console/test_events.py)
    return out


def test_no_route_answers_500_to_bad_input(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        spec = api.get("/openapi.json").json()
        failures = []
        for method, path in _paths(spec):
            if path.endswith("/auth/logout") or "/users/admin" in path:
                continue  # (would end this client's session or touch its own account)
            for body in BODIES if method in ("POST", "PUT", "PATCH") else [b""]:
                for ctype in ("application/json", "application/xml"):
                    r = api.request(method, path, content=body,
                                    headers={"Content-Type": ctype})
                    if r.status_code >= 500:
                        failures.append((method, path, body[:60], ctype, r.status_code,
                                         r.text[:160]))
        assert not failures, failures[:10]
