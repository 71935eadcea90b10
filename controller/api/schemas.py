"""Request and response bodies of the REST API (``/api/v1``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from controller.broadcasting.recurrence import Recurrence


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str | None = Field(None, description="trade it at POST /auth/refresh for a "
                                                        "new pair, once")
    refresh_expires_in: int | None = None


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=10, max_length=200)


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str | None = Field(None, max_length=200)
    everywhere: bool = Field(False, description="end every session of this account")


class AreaOut(BaseModel):
    id: str
    name: str
    kind: str
    parent_id: str | None
    lat: float | None = None
    lon: float | None = None


class SpeakerOut(BaseModel):
    index: int
    name: str
    state: str


class ClusterOut(BaseModel):
    id: str
    area_id: str | None
    name: str
    state: str
    state_since: datetime | None
    state_code: str | None = Field(
        None, description="why it is in its state: birth, heartbeat, last_will, "
                          "heartbeat_timeout, degraded (see causes); docs/errors.md")
    state_reason: str | None = Field(None, description="the same in English")
    causes: list[dict[str, str]] | None = Field(
        None, description="why the cluster is degraded: [{code, subject, message}]")
    provisioned: bool
    last_seen: datetime | None
    firmware: str | None
    lat: float | None
    lon: float | None
    speakers: list[SpeakerOut]
    telemetry: dict[str, Any] | None


class ContentOut(BaseModel):
    id: str
    sha256: str
    duration_s: float
    size: int
    codec: str
    container: str
    kind: str
    source_name: str | None = None
    text: str | None = None
    created_at: datetime


class TTSRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=10_000, description="Vietnamese text to read")
    voice: str = Field("vi", description="espeak-ng voice")
    speed: float = Field(1.0, ge=0.5, le=2.0, description="factor of the normal speaking rate")
    chime: bool | None = Field(None, description="chime before and after (default: setting)")


class Targets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    areas: list[str] = Field(default_factory=list, max_length=10_000)
    clusters: list[str] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _not_empty(self) -> Targets:
        if not self.areas and not self.clusters:
            raise ValueError("targets needs at least one area or cluster")
        return self


class RelaySource(BaseModel):
    """A radio stream the controller pulls and relays (protocol §6.1): Icecast/SHOUTcast
    (mp3, aac, ogg) or HLS."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["relay"]
    url: str = Field(min_length=8, max_length=255)


class LineSource(BaseModel):
    """The boards' own input (protocol §6.2): their line-in, or their FM receiver tuned to
    ``frequency_mhz``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["line"]
    input: Literal["line", "fm"] = "fm"
    frequency_mhz: float | None = Field(None, ge=64.0, le=108.0)

    @model_validator(mode="after")
    def _tuned(self) -> LineSource:
        if self.input == "fm" and self.frequency_mhz is None:
            raise ValueError("an fm input needs frequency_mhz")
        return self


class BroadcastCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_id: str | None = Field(None, description="a recording, or give source")
    source: RelaySource | LineSource | None = Field(
        None, discriminator="kind", description="in place of content_id: relay a radio "
        "stream, or play the boards' own line/FM input, for duration_s")
    duration_s: int | None = Field(None, ge=10, le=4 * 3600, description="with source: how "
                                   "long the relay airs")
    targets: Targets
    title: str = Field("", max_length=200)
    start_at: AwareDatetime | None = Field(
        None, description="ISO 8601 with offset, e.g. 2026-11-23T05:30:00+07:00")
    recurrence: Recurrence | None = None
    priority: Literal["normal", "priority", "emergency"] = "normal"
    expires_at: AwareDatetime | None = None
    volume_pct: int | None = Field(None, ge=0, le=100, description=(
        "play at this volume (refused above the area's cap at that hour)"))
    position: int | None = Field(None, ge=0, le=1000, description=(
        "order among items of the same priority in one programme slot (lower first)"))
    after_preempt: Literal["resume", "restart"] | None = Field(None, description=(
        "when an emergency interrupts it: resume where it stopped, or start over "
        "(default: LOA_AFTER_PREEMPT)"))

    @model_validator(mode="after")
    def _one_schedule(self) -> BroadcastCreate:
        if self.start_at is not None and self.recurrence is not None:
            raise ValueError("give start_at or recurrence, not both")
        if (self.content_id is None) == (self.source is None):
            raise ValueError("give content_id or source, exactly one")
        if self.source is not None and self.duration_s is None:
            raise ValueError("a relay needs duration_s")
        return self


class LiveCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: Targets
    priority: Literal["normal", "priority", "emergency"] = "normal"
    title: str = Field("", max_length=200)
    max_duration_s: int | None = Field(None, ge=10, le=6 * 3600, description=(
        "the longest it may run (default LOA_LIVE_MAX_S)"))


class InboxDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start_at: AwareDatetime | None = Field(
        None, description="when to air it (default: the time the issuer suggested)")
    recurrence: Recurrence | None = None
    areas: list[str] | None = Field(None, max_length=1000, description=(
        "villages of the commune to play it in (default: all the issuer targeted)"))
    position: int | None = Field(None, ge=0, le=1000)

    @model_validator(mode="after")
    def _one_schedule(self) -> InboxDecision:
        if self.start_at is not None and self.recurrence is not None:
            raise ValueError("give start_at or recurrence, not both")
        return self


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_id: str | None = Field(
        None, description="the content the leader listened to: the approval is refused "
                          "(409 approval_stale) if the bulletin now plays another")


class Decline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500)


class PositionSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: int | None = Field(description="lower plays first; null = creation order",
                                 ge=0, le=1000)


class ContentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_id: str
    title: str | None = Field(None, max_length=200)


class DeliveryOut(BaseModel):
    cluster_id: str
    state: str
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    updated_at: datetime
    revision: int | None = Field(None, description="the revision the cluster reported playing")
    assumed: bool = Field(False, description="the state is the controller's conclusion (no "
                                             "report came in time), not a cluster's report")
    corrected_from: str | None = Field(
        None, description="'<state>: <reason>' the controller had concluded, replaced by the "
                          "cluster's own report arriving later")
    corrected_at: datetime | None = None
    stream: dict[str, Any] | None = Field(
        None, description="a live or relayed stream, as the cluster heard it: played_ms, "
                          "gaps, gap_ms (missing or late batches), joined_late")


class OccurrenceOut(BaseModel):
    id: str
    scheduled_at: datetime
    start_at: datetime
    status: str
    summary: dict[str, int]
    content_id: str | None = Field(
        None, description="what this airing plays (a part of a broadcast in parts has its "
                          "own; none yet while that part's audio is being made)")
    start_spread_ms: float | None = Field(
        None, description="latest minus earliest reported start among clusters that played")


class BroadcastOut(BaseModel):
    id: str
    title: str
    status: str
    priority: str
    content_id: str
    targets: dict[str, Any]
    start_at: datetime | None
    recurrence: dict[str, Any] | None
    expires_at: datetime | None
    created_at: datetime
    created_by: str | None
    origin_area_id: str | None = None
    parent_id: str | None = None
    commune_id: str | None = None
    position: int | None = None
    volume_pct: int | None = None
    after_preempt: str | None = None
    revision: int = 0
    approved_by: str | None = None
    approved_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_note: str | None = None
    children: list[dict[str, Any]] = Field(
        default_factory=list, description="for a bulletin handed down: each commune's copy")
    next_slots: list[datetime] = Field(default_factory=list)
    occurrence: OccurrenceOut | None = Field(None, description="the latest occurrence")
    deliveries: list[DeliveryOut] = Field(
        default_factory=list, description="per-cluster state of the latest occurrence, by "
        "cluster id: one page (``deliveries_limit``, ``deliveries_offset``)")
    deliveries_total: int = Field(0, description="how many clusters the latest occurrence has")
    occurrences: list[OccurrenceOut] = Field(default_factory=list)
