"""The dependency direction is part of the design: controller → devices ← firmware_sim,
controller → audio; devices and audio are pure of ours and of I/O frameworks. Every module
of every package is imported (in a fresh interpreter) and what it pulls in is checked."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

FORBIDDEN = {
    "devices": ["controller", "firmware_sim", "audio", "fastapi", "sqlalchemy", "paho", "aiomqtt",
                "mqtt5"],
    "audio": ["controller", "devices", "firmware_sim", "fastapi", "sqlalchemy", "paho"],
    "firmware_sim": ["controller", "audio", "fastapi", "sqlalchemy", "apscheduler"],
    "controller": ["firmware_sim"],
}


def modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    found = [package]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if ".db.migrations" in info.name or info.name.endswith(".__main__"):
            continue  # Alembic's scripts; a package's entry point runs when imported
        found.append(info.name)
    return sorted(found)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_every_module_imports_only_what_it_may(package: str) -> None:
    names = modules(package)
    assert len(names) > 1 or package == "devices"
    code = ("import json, sys, importlib\n"
            "out = {}\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "    out[name] = sorted(set(sys.modules))\n"
            "print(json.dumps(out))")
    # one interpreter per package: a module's imports are what it and those before it pull in
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout)
    for name, mods in loaded.items():
        bad = [m for m in mods for f in FORBIDDEN[package] if m == f or m.startswith(f + ".")]
        assert not bad, f"{name} pulls in {sorted(set(bad))[:10]}"


def test_the_walk_finds_the_modules_it_claims_to() -> None:
    assert "controller.transport.mqtt" in modules("controller")
    assert "controller.broadcasting.service" in modules("controller")
    assert "firmware_sim.mqtt" in modules("firmware_sim")
