"""Broadcast policy per area (inherited downward): quiet hours, programme length, volume
caps by time of day, and the commune's programme slots.

Scheduling a normal or priority item that would play inside an area's quiet hours, that is
longer than its programme limit, or that asks for more volume than the cap at that hour is
refused with the reason. Emergencies pass. The cap also travels in every play command, so a
cluster never plays a local item louder than the cap whatever its own volume is set to.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.errors import Problem
from controller.fleet.thresholds import overlay

__all__ = ["Policy", "PolicyPatch", "ProgrammeSlot", "QuietWindow", "VolumeCap",
           "effective_policy", "violations"]


class QuietWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: time = Field(description="local time, e.g. 21:30")
    end: time = Field(description="local time, e.g. 05:00 (may be past midnight)")

    def contains(self, t: time) -> bool:
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def label(self) -> str:
        return f"{self.start.strftime('%H:%M')}–{self.end.strftime('%H:%M')}"


class VolumeCap(QuietWindow):
    max_pct: int = Field(ge=0, le=100, description="loudest a non-emergency item may play")


class ProgrammeSlot(BaseModel):
    """A fixed daily programme (e.g. 05:30 and 17:00, Monday to Saturday)."""

    model_config = ConfigDict(extra="forbid")
    at: time = Field(description="local start time, e.g. 05:30")
    days: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4, 5],
                            description="weekdays, 0 = Monday … 6 = Sunday")

    @field_validator("days")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        if not v or any(d < 0 or d > 6 for d in v):
            raise ValueError("days are weekday numbers 0 (Monday) to 6 (Sunday), at least one")
        return sorted(set(v))


def _default_programme() -> list[ProgrammeSlot]:
    return [ProgrammeSlot(at=time(5, 30)), ProgrammeSlot(at=time(17, 0))]


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quiet_hours: list[QuietWindow] = Field(default_factory=list)
    max_programme_s: int | None = Field(None, ge=10, description="longest item allowed")
    volume_caps: list[VolumeCap] = Field(default_factory=list)
    programme: list[ProgrammeSlot] = Field(default_factory=_default_programme)
    approval_required: bool = Field(
        True, description="an officer's bulletin airs only once a leader has approved it")
    officers_send_emergencies: bool = Field(
        False, description="officers of this area may send emergencies (which air at once, "
                           "unapproved, at full volume); otherwise only leaders and admins")

    def volume_cap(self, local: time) -> int | None:
        caps = [c.max_pct for c in self.volume_caps if c.contains(local)]
        return min(caps) if caps else None

    def next_programme(self, after: datetime, zone: ZoneInfo) -> datetime | None:
        """The first programme slot strictly after ``after`` (aware), within two weeks."""
        local = after.astimezone(zone)
        for day in range(15):
            date = (local + timedelta(days=day)).date()
            for slot in sorted(self.programme, key=lambda s: s.at):
                if date.weekday() not in slot.days:
                    continue
                at = datetime.combine(date, slot.at, tzinfo=zone)
                if at > local:
                    return at
        return None


class PolicyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quiet_hours: list[QuietWindow] | None = None
    max_programme_s: int | None = Field(None, ge=10)
    volume_caps: list[VolumeCap] | None = None
    programme: list[ProgrammeSlot] | None = None
    approval_required: bool | None = None
    officers_send_emergencies: bool | None = None

    @field_validator("quiet_hours", "volume_caps", "programme")
    @classmethod
    def _few(cls, v: list[BaseModel] | None) -> list[BaseModel] | None:
        if v is not None and len(v) > 8:
            raise ValueError("at most 8 entries")
        return v


def effective_policy(overrides_root_first: list[dict[str, Any] | None]) -> Policy:
    return Policy(**overlay(overrides_root_first))


def violations(policy: Policy, area_name: str, start: datetime, duration_s: float,
               zone: ZoneInfo, volume_pct: int | None = None,
               area_id: str | None = None) -> list[Problem]:
    """Why an item starting at ``start`` (aware) for ``duration_s`` breaks the policy: one
    coded problem per rule (``volume_cap``, ``programme_too_long``, ``quiet_hours``)."""
    out = []
    local = start.astimezone(zone)
    where = {"area": area_id, "area_name": area_name}
    if volume_pct is not None:
        cap = policy.volume_cap(local.time())
        if cap is not None and volume_pct > cap:
            out.append(Problem(
                "volume_cap", f"{area_name}: volume {volume_pct}% is above the {cap}% cap at "
                f"{local.strftime('%H:%M')}",
                {**where, "volume_pct": volume_pct, "cap_pct": cap, "at": local.strftime("%H:%M")}))
    if policy.max_programme_s is not None and duration_s > policy.max_programme_s:
        out.append(Problem(
            "programme_too_long", f"{area_name}: the item lasts {duration_s:.0f} s, longer "
            f"than the {policy.max_programme_s} s programme limit",
            {**where, "duration_s": round(duration_s), "max_s": policy.max_programme_s}))
    end = local + timedelta(seconds=duration_s)
    for w in policy.quiet_hours:
        probe = local
        while probe <= end:  # check the start, then every minute of the item
            if w.contains(probe.time()):
                out.append(Problem(
                    "quiet_hours", f"{area_name}: quiet hours {w.label()} — "
                    f"{probe.strftime('%H:%M')} is inside them; only emergencies may play "
                    "then", {**where, "start": w.start.strftime("%H:%M"),
                             "end": w.end.strftime("%H:%M"), "at": probe.strftime("%H:%M")}))
                break
            probe += timedelta(minutes=1)
    return out
