"""What is wrong with a cluster, named, from its telemetry and the area's thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from controller.fleet.thresholds import Thresholds
from devices.messages import SpeakerState, Telemetry

__all__ = ["SEVERITY", "Cause", "causes_of"]

SEVERITY = {
    "offline": "critical", "speaker_open": "critical", "speaker_short": "critical",
    "amp_overheat": "critical", "battery_low": "critical", "slot_at_risk": "critical",
    "possible_tampering": "critical", "played_after_cancel": "critical",
    "weak_signal": "warning", "on_battery": "warning", "clock_drift": "warning",
    "storage_low": "warning", "unprovisioned": "warning", "reboot_loop": "warning",
    "stream_source_lost": "warning",
}


@dataclass(frozen=True, slots=True)
class Cause:
    code: str
    subject: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "subject": self.subject, "message": self.message}


def causes_of(t: Telemetry, th: Thresholds) -> list[Cause]:
    """Causes from one heartbeat. Reads the validated message itself: a heartbeat is not
    turned into a dict on the hot path (that happens once per flush, for the latest)."""
    out: list[Cause] = []
    for s in t.speakers:
        if s.state is SpeakerState.OPEN:
            out.append(Cause("speaker_open", str(s.index),
                             f"speaker {s.index}: open circuit (blown horn or cut line)"))
        elif s.state is SpeakerState.SHORT:
            out.append(Cause("speaker_short", str(s.index), f"speaker {s.index}: short circuit"))
    temp = t.amp_temp_c
    if temp > th.amp_temp_c:
        out.append(Cause("amp_overheat", "", f"amplifier at {temp:.0f} °C (limit {th.amp_temp_c:.0f} °C)"))
    rssi = t.link.rssi_dbm
    if rssi is not None and rssi < th.rssi_dbm:
        out.append(Cause("weak_signal", "", f"weak {t.link.type} signal: {rssi} dBm "
                                            f"(limit {th.rssi_dbm} dBm)"))
    power = t.power
    if power.source == "battery":
        pct = power.battery_pct
        out.append(Cause("on_battery", "", f"mains power lost, on battery ({pct}%)"))
        if pct is not None and pct < th.battery_pct:
            out.append(Cause("battery_low", "", f"battery at {pct}% (limit {th.battery_pct}%)"))
    off = t.clock_offset_ms
    if abs(off) > th.clock_offset_ms:
        out.append(Cause("clock_drift", "", f"clock off by {off} ms (limit ±{th.clock_offset_ms} ms)"))
    if t.storage_free_kb < th.storage_free_kb:
        out.append(Cause("storage_low", "", f"{t.storage_free_kb} KB storage free"))
    return out
