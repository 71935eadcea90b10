"""SQLAlchemy 2 models. Every change goes through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from controller.db.types import UTCDateTime

__all__ = [
    "Action",
    "ActionResult",
    "Alert",
    "ApiToken",
    "Area",
    "AuditEntry",
    "Base",
    "Broadcast",
    "Cluster",
    "Content",
    "ContentBlob",
    "Delivery",
    "Occurrence",
    "Speaker",
    "StateTransition",
    "TelemetrySample",
    "User",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Targets(NamedTuple):
    """What a broadcast or an action is aimed at (stored as JSON ``{"areas", "clusters"}``)."""

    areas: list[str]
    clusters: list[str]

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> Targets:
        stored = stored or {}
        return cls(list(stored.get("areas") or []), list(stored.get("clusters") or []))


class _Targeted:
    """For a model with a ``targets`` JSON column: ``target``, the same typed."""

    @property
    def target(self) -> Targets:
        return Targets.of(getattr(self, "targets", None))


def table_of(model: type[Base]) -> Table:
    """A model's table, for Core statements (executemany with bound parameters)."""
    return cast(Table, model.__table__)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Area(Base):
    __tablename__ = "areas"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    #: health thresholds overriding the parent's (see controller.fleet.thresholds)
    thresholds: Mapped[dict[str, Any] | None]
    #: broadcast policy overriding the parent's: quiet hours, programme length (controller.access.policy)
    policy: Mapped[dict[str, Any] | None]


class Cluster(Base):
    __tablename__ = "clusters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    provisioned: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="offline")
    state_since: Mapped[datetime | None]
    state_reason: Mapped[str | None] = mapped_column(String(200))
    bd_seq: Mapped[int | None] = mapped_column(Integer)
    last_seq: Mapped[int | None] = mapped_column(Integer)
    last_seen: Mapped[datetime | None]
    firmware: Mapped[str | None] = mapped_column(String(64))
    heartbeat_s: Mapped[int | None] = mapped_column(Integer)
    telemetry: Mapped[dict[str, Any] | None]
    #: why the cluster is degraded: [{"code", "subject", "message"}]
    causes: Mapped[list[Any] | None]
    #: the board's broker password, as Mosquitto's password_file holds it (PBKDF2-SHA512);
    #: None: no credential (never issued, or revoked), the broker refuses the board
    credential_hash: Mapped[str | None] = mapped_column(String(200))
    credential_issued_at: Mapped[datetime | None]
    #: retired: kept for its history (deliveries, alerts), never targeted, no credential
    retired_at: Mapped[datetime | None]
    speakers: Mapped[list[Speaker]] = relationship(
        back_populates="cluster", order_by="Speaker.index", cascade="all, delete-orphan")


class Speaker(Base):
    __tablename__ = "speakers"
    __table_args__ = (UniqueConstraint("cluster_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100), default="")
    watts: Mapped[int] = mapped_column(Integer, default=30)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    cluster: Mapped[Cluster] = relationship(back_populates="speakers")


class Content(Base):
    __tablename__ = "contents"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), ForeignKey("content_blobs.sha256"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # file | tts
    codec: Mapped[str] = mapped_column(String(16))
    container: Mapped[str] = mapped_column(String(16))
    mime: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    source_name: Mapped[str | None] = mapped_column(String(255))
    source_format: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    voice: Mapped[str | None] = mapped_column(String(32))
    #: for TTS: hash of (engine, voice, speed, text, audio settings); the same request reuses
    #: the stored audio, so a bulletin typed twice is one content address (engines vary).
    source_key: Mapped[str | None] = mapped_column(String(64), index=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContentBlob(Base):
    """Encoded audio, content-addressed: stored once however often it is uploaded."""

    __tablename__ = "content_blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Broadcast(_Targeted, Base):
    __tablename__ = "broadcasts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    content_id: Mapped[str] = mapped_column(ForeignKey("contents.id"))
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    targets: Mapped[dict[str, Any]]
    start_at: Mapped[datetime | None]
    recurrence: Mapped[dict[str, Any] | None]
    expires_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="scheduled", index=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    #: the creator's area: who may cancel it (an area at or above this one)
    origin_area_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: for CAP alerts: "sender,identifier,sent" (how CAP Update/Cancel reference it)
    cap_ref: Mapped[str | None] = mapped_column(String(512), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]
    #: a bulletin from a province or district is handed to each target commune as a child
    #: (see controller.broadcasting.referral); the parent then only rolls up its children
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    #: the commune a child belongs to (whose inbox or programme it is in)
    commune_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: who accepted or declined an inbox item, when, and why
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(String(500))
    #: order among items of the same rank in one programme slot (lower plays first)
    position: Mapped[int | None] = mapped_column(Integer)
    #: the volume the item asks to play at (capped by the area's policy at that hour)
    volume_pct: Mapped[int | None] = mapped_column(Integer)
    #: bumped each time the content is replaced (an update)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    #: "resume" or "restart" when a higher priority interrupts it (None: the setting)
    after_preempt: Mapped[str | None] = mapped_column(String(8))
    #: the leader who approved it to air (an officer's bulletin waits in pending_approval)
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    content: Mapped[Content] = relationship()
    occurrences: Mapped[list[Occurrence]] = relationship(
        back_populates="broadcast", order_by="Occurrence.start_at")
    children: Mapped[list[Broadcast]] = relationship(order_by="Broadcast.commune_id")


class Occurrence(Base):
    """One airing of a broadcast; unique per (broadcast, start) so it is dispatched once."""

    __tablename__ = "occurrences"
    __table_args__ = (UniqueConstraint("broadcast_id", "scheduled_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    broadcast_id: Mapped[str] = mapped_column(ForeignKey("broadcasts.id"), index=True)
    scheduled_at: Mapped[datetime]  # the slot in the schedule
    start_at: Mapped[datetime]  # the signed start (later than scheduled_at if dispatched late)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    sent_at: Mapped[datetime | None]
    ends_at: Mapped[datetime]
    #: what it plays (the broadcast's content when it was created, or an update's)
    content_id: Mapped[str | None] = mapped_column(ForeignKey("contents.id"))
    #: bumped by each content update; a cluster replaces an item it has not started yet
    #: when a play for the same occurrence arrives with a higher revision
    revision: Mapped[int] = mapped_column(Integer, default=0)
    broadcast: Mapped[Broadcast] = relationship(back_populates="occurrences")
    content: Mapped[Content | None] = relationship()
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="occurrence", order_by="Delivery.cluster_id")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("occurrence_id", "cluster_id"),
                      Index("ix_deliveries_cluster_state", "cluster_id", "state"))
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    occurrence_id: Mapped[str] = mapped_column(ForeignKey("occurrences.id"), index=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(256))
    #: the revision the cluster reported playing (proof of which content aired)
    revision: Mapped[int | None] = mapped_column(Integer)
    #: the final state is the controller's conclusion (no report came in time), not a
    #: cluster's report: a genuine report arriving later replaces it (``corrected_from``)
    assumed: Mapped[bool] = mapped_column(default=False)
    #: "<state>: <reason>" the controller had concluded, replaced by the cluster's report
    corrected_from: Mapped[str | None] = mapped_column(String(300))
    corrected_at: Mapped[datetime | None]
    #: a stream's figures as the cluster reported them (protocol §6.1): played_ms, gaps,
    #: gap_ms, joined_late
    stream: Mapped[dict[str, Any] | None]
    occurrence: Mapped[Occurrence] = relationship(back_populates="deliveries")


class User(Base):
    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="officer")
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: a disabled account can neither log in nor use a token it holds
    disabled: Mapped[bool] = mapped_column(default=False)
    #: wrong passwords since the last good login; past the limit the account is locked
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"), index=True)
    expires_at: Mapped[datetime]
    #: "access" (sent with each request, short-lived) or "refresh" (traded for a new pair)
    kind: Mapped[str] = mapped_column(String(8), default="access")


class AuditEntry(Base):
    """Who did what, when, from where: appended, never changed (no API updates or deletes
    it)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    role: Mapped[str | None] = mapped_column(String(16))
    area_id: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(64))
    #: e.g. "POST /api/v1/broadcasts/{broadcast_id}/cancel", "login", "login_failed"
    action: Mapped[str] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None]


class CapMessage(Base):
    """Every CAP document POSTed, aired or refused, with the reply sent back (Ack or Error):
    the province's record of what it sent and what each commune's controller answered."""

    __tablename__ = "cap_messages"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    username: Mapped[str | None] = mapped_column(String(64))
    #: the posting account's area: who may read the entry
    area_id: Mapped[str | None] = mapped_column(String(64), index=True)
    identifier: Mapped[str | None] = mapped_column(String(512))
    sender: Mapped[str | None] = mapped_column(String(512))
    sent: Mapped[str | None] = mapped_column(String(64))
    msg_type: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(16))
    event: Mapped[str | None] = mapped_column(String(512))
    http_status: Mapped[int] = mapped_column(Integer)
    #: the refusal's code (None when accepted)
    code: Mapped[str | None] = mapped_column(String(64))
    #: what happened: broadcast ids, cancelled ids, notes; or the refusal's message
    outcome: Mapped[dict[str, Any] | None]
    #: the CAP Ack or Error XML sent back
    reply: Mapped[str | None] = mapped_column(Text)


class StateTransition(Base):
    """Every change of a cluster's state; availability is computed from these."""

    __tablename__ = "state_transitions"
    __table_args__ = (Index("ix_transitions_cluster_at", "cluster_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200))


class Alert(Base):
    """opened → (acknowledged) → resolved once its condition stayed clear for ``hold_s``."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "resolved_at", "cluster_id"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    cluster_id: Mapped[str | None] = mapped_column(String(64), index=True)
    area_id: Mapped[str | None] = mapped_column(String(64), index=True)
    code: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128), default="")
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    message: Mapped[str] = mapped_column(String(500))
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    cleared_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    hold_s: Mapped[int] = mapped_column(Integer, default=120)
    flaps: Mapped[int] = mapped_column(Integer, default=0)


class TelemetrySample(Base):
    """Downsampled telemetry: 1-minute buckets (kept 48 h) and 1-hour buckets (kept 90 days)."""

    __tablename__ = "telemetry_samples"
    cluster_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resolution: Mapped[str] = mapped_column(String(4), primary_key=True)  # "1m" | "1h"
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    rssi_avg: Mapped[float | None] = mapped_column(Float)
    rssi_min: Mapped[float | None] = mapped_column(Float)
    amp_temp_avg: Mapped[float | None] = mapped_column(Float)
    amp_temp_max: Mapped[float | None] = mapped_column(Float)
    battery_min: Mapped[float | None] = mapped_column(Float)
    on_battery_ratio: Mapped[float | None] = mapped_column(Float)
    volume_pct: Mapped[int | None] = mapped_column(Integer)
    clock_offset_ms: Mapped[int | None] = mapped_column(Integer)
    storage_free_kb: Mapped[int | None] = mapped_column(Integer)
    speakers_faulty_max: Mapped[int | None] = mapped_column(Integer)


class Action(_Targeted, Base):
    """A remote action (signed command) on clusters or an area, with per-cluster outcome."""

    __tablename__ = "actions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]]
    targets: Mapped[dict[str, Any]]
    requested_by: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    results: Mapped[list[ActionResult]] = relationship(
        back_populates="action", order_by="ActionResult.cluster_id")


class ActionResult(Base):
    __tablename__ = "action_results"
    __table_args__ = (UniqueConstraint("action_id", "cluster_id"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    action_id: Mapped[str] = mapped_column(ForeignKey("actions.id"), index=True)
    cluster_id: Mapped[str] = mapped_column(String(64))
    command_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default="sent")
    result: Mapped[dict[str, Any] | None]
    reason: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[Action] = relationship(back_populates="results")
