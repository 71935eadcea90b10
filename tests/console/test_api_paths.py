"""The console's API client is checked against /openapi.json: every path its code calls,
with its method, is one the controller serves (a renamed route fails here, not in a
person's hands). No browser needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controller.app import create_app
from controller.settings import Settings

WEB = Path(__file__).resolve().parents[2] / "controller" / "web" / "js"
#: every string or template literal that names an API path, wherever it is built (a call,
#: useData, a download, a path chosen by a condition); its method from the options after it
ROOTS = ("auth", "areas", "clusters", "contents", "broadcasts", "alerts", "actions", "users",
         "inbox", "programme", "reports", "audit", "devices", "network", "events", "cap",
         "thresholds")
CALL = re.compile(r"""(["`])(/(?:""" + "|".join(ROOTS) + r""")\b[^"`]*)\1(?=(?P<rest>[^;]{0,160}))""")
METHOD = re.compile(r"""method:\s*"([A-Z]+)\"""")


def _template(path: str) -> str:
    path = path.split("?")[0]
    return re.sub(r"\$\{[^}]*\}", "{}", path)


def used() -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for f in WEB.rglob("*.js"):
        for m in CALL.finditer(f.read_text("utf-8")):
            rest = m.group("rest").split("`/")[0].split('"/')[0]  # (not the next path's)
            method = METHOD.search(rest)
            out.add(((method.group(1) if method else "GET"), _template(m.group(2))))
    return out


def test_every_path_the_console_calls_is_served(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, mqtt_url=None))
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    served = {(m.upper(), "/" + re.sub(r"\{[^}]*\}", "{}", p).removeprefix("/api/v1/"))
              for p, ops in spec["paths"].items() for m in ops}
    calls = used()
    assert len(calls) >= 25, calls  # (the pattern still finds the console's calls)
    missing = sorted(c for c in calls if c not in served)
    assert not missing, f"the console calls what the API does not serve: {missing}"


@pytest.mark.parametrize("path", ["/", "/console/js/app.js", "/console/vendor/preact.module.js",
                                  "/console/console.css"])
def test_the_console_is_served(tmp_path: Path, path: str) -> None:
    app = create_app(Settings(data_dir=tmp_path, mqtt_url=None))
    with TestClient(app) as client:
        r = client.get(path)
    assert r.status_code == 200 and len(r.content) > 200


def test_every_vietnamese_text_has_its_english_one() -> None:
    """English second: every key of the catalog has both languages (a refusal's English is
    the API's own message, so the ``code.*`` keys need no English entry)."""
    text = (WEB / "messages.js").read_text("utf-8")
    vi, en = text.split("export const en")
    key = re.compile(r'^\s*"([^"]+)":', re.MULTILINE)
    keys_vi = {k for k in key.findall(vi) if not k.startswith("code.")}
    keys_en = set(key.findall(en)) | set(re.findall(r',\s*"([^"]+)":', en))
    assert len(keys_vi) > 250
    assert sorted(keys_vi - keys_en) == []
