"""Broadcast policy per area (inherited downward): quiet hours and programme length.

Scheduling a normal or priority item that would play inside an area's quiet hours, or that
is longer than its programme limit, is refused with the reason. Emergencies pass.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.thresholds import overlay

__all__ = ["Policy", "PolicyPatch", "QuietWindow", "effective_policy", "violations"]


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


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quiet_hours: list[QuietWindow] = Field(default_factory=list)
    max_programme_s: int | None = Field(None, ge=10, description="longest item allowed")


class PolicyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quiet_hours: list[QuietWindow] | None = None
    max_programme_s: int | None = Field(None, ge=10)

    @field_validator("quiet_hours")
    @classmethod
    def _few(cls, v: list[QuietWindow] | None) -> list[QuietWindow] | None:
        if v is not None and len(v) > 8:
            raise ValueError("at most 8 quiet windows")
        return v


def effective_policy(overrides_root_first: list[dict[str, Any] | None]) -> Policy:
    return Policy(**overlay(overrides_root_first))


def violations(policy: Policy, area_name: str, start: datetime, duration_s: float,
               zone: ZoneInfo) -> list[str]:
    """Why an item starting at ``start`` (aware) for ``duration_s`` breaks the policy."""
    out = []
    if policy.max_programme_s is not None and duration_s > policy.max_programme_s:
        out.append(f"{area_name}: the item lasts {duration_s:.0f} s, longer than the "
                   f"{policy.max_programme_s} s programme limit")
    local = start.astimezone(zone)
    end = local + timedelta(seconds=duration_s)
    for w in policy.quiet_hours:
        probe = local
        while probe <= end:  # check the start, then every minute of the item
            if w.contains(probe.time()):
                out.append(f"{area_name}: quiet hours {w.label()} — "
                           f"{probe.strftime('%H:%M')} is inside them; only emergencies "
                           "may play then")
                break
            probe += timedelta(minutes=1)
    return out
