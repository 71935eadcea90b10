"""The dependency direction is part of the design: controller → devices ← firmware_sim,
controller → audio; devices and audio are pure of ours and of I/O frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = {
    "devices": ["controller", "firmware_sim", "audio", "fastapi", "sqlalchemy", "paho", "aiomqtt"],
    "audio": ["controller", "devices", "firmware_sim", "fastapi", "sqlalchemy", "paho"],
    "firmware_sim": ["controller", "audio", "fastapi", "sqlalchemy", "apscheduler"],
    "firmware_sim.cluster": ["controller", "audio", "fastapi", "sqlalchemy", "apscheduler"],
    "controller.app": ["firmware_sim"],
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    code = (f"import json, sys, importlib; importlib.import_module({package!r}); "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded for f in FORBIDDEN[package] if m == f or m.startswith(f + ".")]
    assert not bad, f"{package} pulls in {sorted(set(bad))[:10]}"
