"""Health thresholds, configurable per area; an area inherits its ancestors' settings.

``PUT /api/v1/areas/{id}/thresholds`` stores a partial override; the effective thresholds of
a cluster are the defaults, overlaid root-first by every ancestor's override.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Thresholds", "ThresholdsPatch", "effective", "overlay"]


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amp_temp_c: float = Field(70.0, description="amplifier overheating above this")
    rssi_dbm: int = Field(-100, description="weak signal below this")
    battery_pct: int = Field(30, description="battery low below this")
    clock_offset_ms: int = Field(500, description="clock drift beyond ± this")
    storage_free_kb: int = Field(10_240, description="storage low below this")
    resolve_hold_s: int = Field(120, ge=0, le=86_400,
                                description="a condition must stay clear this long before its "
                                            "alert resolves (stops a flapping link's storm)")
    readiness_lead_min: int = Field(15, ge=1, le=24 * 60,
                                    description="check each slot's readiness this long before")


class ThresholdsPatch(BaseModel):
    """A partial override: every field optional."""

    model_config = ConfigDict(extra="forbid")

    amp_temp_c: float | None = Field(None, ge=20, le=150)
    rssi_dbm: int | None = Field(None, ge=-150, le=0)
    battery_pct: int | None = Field(None, ge=0, le=100)
    clock_offset_ms: int | None = Field(None, ge=1)
    storage_free_kb: int | None = Field(None, ge=0)
    resolve_hold_s: int | None = Field(None, ge=0, le=86_400)
    readiness_lead_min: int | None = Field(None, ge=1, le=24 * 60)


def overlay(overrides_root_first: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Per-area overrides merged root first: the nearest area's value of a field wins."""
    merged: dict[str, Any] = {}
    for o in overrides_root_first:
        if o:
            merged.update({k: v for k, v in o.items() if v is not None})
    return merged


def effective(overrides_root_first: list[dict[str, Any] | None]) -> Thresholds:
    return Thresholds(**overlay(overrides_root_first))
