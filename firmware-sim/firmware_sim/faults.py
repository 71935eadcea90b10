"""Injectable faults of a simulated board, evolving over time; reproducible by seed.

| fault | params | effect |
|---|---|---|
| ``power_cut`` | ``battery`` (bool), ``drain_pct_per_min`` | no battery: abrupt disconnect (the broker publishes the Will) until cleared; with battery: runs on battery, which drains; at 0 % the board dies |
| ``fading_signal`` | ``db_per_min`` | RSSI falls; below -113 dBm the link drops |
| ``flapping`` | ``period_s``, ``down_s`` | the link drops abruptly every period and returns after ``down_s`` (jittered) |
| ``blown_speaker`` | ``index``, ``mode`` (open/short) | that speaker line measures open (or short) circuit |
| ``overheating`` | ``c_per_min`` | the amplifier heats this fast while playing |
| ``clock_drift`` | ``ms_per_min``, ``step_ms`` | the board's oscillator is off by ``step_ms`` at once and runs away at ``ms_per_min``; its clock synchronisation with the controller (protocol §4.5) is what keeps playback in step |
| ``slow_link`` | ``kbps`` | content chunks arrive at this rate at most |
| ``reboot_loop`` | ``period_s`` | the board reboots every period (abrupt disconnect, uptime reset) |
| ``link_cut`` | ``down_s`` | the link drops abruptly once and returns after ``down_s`` (the board plays on) |
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULTS", "FaultError", "Physics"]

FAULTS: dict[str, dict[str, Any]] = {
    "power_cut": {"battery": False, "drain_pct_per_min": 10.0},
    "fading_signal": {"db_per_min": 6.0},
    "flapping": {"period_s": 12.0, "down_s": 2.0},
    "blown_speaker": {"index": 1, "mode": "open"},
    "overheating": {"c_per_min": 40.0},
    "clock_drift": {"ms_per_min": 200.0, "step_ms": 0.0},
    "slow_link": {"kbps": 64.0},
    "reboot_loop": {"period_s": 20.0},
    "link_cut": {"down_s": 3.0},
}

LINK_LOST_DBM = -113
AMBIENT_C = 36.0


class FaultError(ValueError):
    pass


@dataclass
class Physics:
    """The board's measurable state; ``tick`` advances it by ``dt`` seconds."""

    rng: random.Random
    rssi_dbm: float = -75.0
    amp_temp_c: float = AMBIENT_C
    battery_pct: float = 100.0
    on_battery: bool = False
    clock_offset_ms: float = 0.0
    dead: bool = False  # no power at all
    link_down_for: float = 0.0  # seconds the link stays down (flapping, reboot)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    _flap_timer: float = 0.0
    _reboot_timer: float = 0.0

    def inject(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if name not in FAULTS:
            raise FaultError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        merged = {**FAULTS[name], **(params or {})}
        unknown = set(merged) - set(FAULTS[name])
        if unknown:
            raise FaultError(f"unknown parameter(s) for {name}: {', '.join(sorted(unknown))}")
        self.faults[name] = merged
        if name == "power_cut":
            self.on_battery = bool(merged["battery"])
            self.dead = not self.on_battery
        if name == "flapping":
            self._flap_timer = float(merged["period_s"]) * self.rng.uniform(0.5, 1.0)
        if name == "reboot_loop":
            self._reboot_timer = float(merged["period_s"])
        if name == "clock_drift":
            self.clock_offset_ms += float(merged["step_ms"])
        if name == "link_cut":
            self.link_down_for = float(merged["down_s"])
            del self.faults[name]  # (once: nothing to clear)
        return merged

    def clear(self, name: str) -> None:
        self.faults.pop(name, None)
        if name == "power_cut":
            self.on_battery = False
            self.dead = False
            self.battery_pct = 100.0
        if name == "fading_signal":
            self.rssi_dbm = -75.0
        if name == "clock_drift":  # the oscillator is put right (a new board, a repair)
            self.clock_offset_ms = 0.0

    @property
    def link_up(self) -> bool:
        return not self.dead and self.link_down_for <= 0 and self.rssi_dbm > LINK_LOST_DBM

    def tick(self, dt: float, playing: bool) -> list[str]:
        """Advance time; returns events: ``"drop"`` (link lost abruptly), ``"reboot"``."""
        events: list[str] = []
        f = self.faults
        was_up = self.link_up
        if self.link_down_for > 0:
            self.link_down_for = max(0.0, self.link_down_for - dt)
        if "fading_signal" in f:
            self.rssi_dbm -= float(f["fading_signal"]["db_per_min"]) * dt / 60
        rate = float(f["overheating"]["c_per_min"]) if "overheating" in f else 4.0
        if playing:
            self.amp_temp_c += rate * dt / 60
        else:
            self.amp_temp_c = max(AMBIENT_C, self.amp_temp_c - 6.0 * dt / 60)
        if self.on_battery:
            self.battery_pct = max(0.0, self.battery_pct - float(
                f["power_cut"]["drain_pct_per_min"]) * dt / 60)
            if self.battery_pct <= 0:
                self.dead = True
        if "clock_drift" in f:
            self.clock_offset_ms += float(f["clock_drift"]["ms_per_min"]) * dt / 60
        if "flapping" in f and self.link_down_for <= 0:
            self._flap_timer -= dt
            if self._flap_timer <= 0:
                p = f["flapping"]
                self.link_down_for = float(p["down_s"]) * self.rng.uniform(0.8, 1.2)
                self._flap_timer = float(p["period_s"]) * self.rng.uniform(0.8, 1.2)
        if "reboot_loop" in f and self.link_down_for <= 0:  # counts while the board is up
            self._reboot_timer -= dt
            if self._reboot_timer <= 0:
                self._reboot_timer = float(f["reboot_loop"]["period_s"])
                self.link_down_for = max(self.link_down_for, 3.0)  # boot time
                events.append("reboot")
        if was_up and not self.link_up:
            events.append("drop")
        return events

    def chunk_delay_s(self, nbytes: int) -> float:
        if "slow_link" not in self.faults:
            return 0.0
        return nbytes * 8 / (float(self.faults["slow_link"]["kbps"]) * 1000)
