"""Typed wire messages of protocol v1, validated at the edge.

Control messages are UTF-8 JSON objects a technician can read with ``mosquitto_sub``; every
message carries ``"v": 1`` (the schema version). Unknown fields are ignored so that newer
firmware can add fields; missing or mistyped fields make the message invalid.

Timestamps on the wire are ISO 8601 UTC with milliseconds and a ``Z`` suffix.
Audio never travels in JSON: see ``loa/v1/content/{sha256}/{index}`` (binary chunks).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from devices.stream import StreamSpec
from devices.topics import ID_PATTERN

__all__ = [
    "ACTION_KINDS",
    "COMMAND_BODIES",
    "MAX_CONTROL_PAYLOAD",
    "SCHEMA_VERSION",
    "AckEvent",
    "Birth",
    "CancelBody",
    "Command",
    "ContentManifest",
    "ContentRequest",
    "ControllerStatus",
    "Death",
    "DeliveryEvent",
    "DeliveryState",
    "Event",
    "LineSpec",
    "MessageError",
    "PlayBody",
    "Priority",
    "RebirthBody",
    "RefusalReason",
    "RefusedEvent",
    "SetHeartbeatBody",
    "SetSpeakerBody",
    "SetVolumeBody",
    "SpeakerReport",
    "SpeakerState",
    "SpeakerTest",
    "Status",
    "StreamStats",
    "Telemetry",
    "UtcDatetime",
    "dumps",
    "iso",
    "parse_event",
    "parse_status",
    "parse_telemetry",
]

SCHEMA_VERSION = 1
#: Largest JSON control message either side accepts (bytes). Bigger ones are dropped.
MAX_CONTROL_PAYLOAD = 64 * 1024


def iso(dt: datetime) -> str:
    """Format an aware datetime as wire time: ``2026-11-21T05:30:00.000Z``."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime on the wire")
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(lambda d: d.astimezone(UTC)),
    PlainSerializer(iso, return_type=str),
]
#: checked inside pydantic-core (no Python call per message): the same rule as ``check_id``
WireId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Priority(StrEnum):
    NORMAL = "normal"
    PRIORITY = "priority"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return {"normal": 0, "priority": 1, "emergency": 2}[self.value]


class DeliveryState(StrEnum):
    """What a cluster reports about one occurrence of a broadcast."""

    RECEIVED = "received"  # command accepted; content may still be missing
    READY = "ready"  # content complete and verified; waiting for start time
    PLAYING = "playing"  # playback started or resumed (``at`` = actual start, own clock)
    PREEMPTED = "preempted"  # a higher priority took the speakers; it resumes afterwards
    PLAYED = "played"  # playback finished
    FAILED = "failed"  # could not play (``reason``)
    CANCELLED = "cancelled"  # stopped or dropped by a cancel command


class RefusalReason(StrEnum):
    MALFORMED = "malformed"  # not JSON / not a command / wrong types
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSIGNED = "unsigned"  # no signature
    UNKNOWN_KEY = "unknown_key"  # key_id is not a provisioned controller key
    BAD_SIGNATURE = "bad_signature"
    WRONG_TOPIC = "wrong_topic"  # signed for another topic (moved from elsewhere)
    NOT_YET_VALID = "not_yet_valid"  # issued_at too far in the future
    EXPIRED = "expired"
    REPLAYED = "replayed"  # command id already seen
    UNKNOWN_KIND = "unknown_kind"


class SpeakerState(StrEnum):
    OK = "ok"
    OPEN = "open"  # open circuit: blown horn or cut line
    SHORT = "short"
    MUTED = "muted"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- controller -> cluster: signed commands -------------------------------------------------


class ContentManifest(_Wire):
    """Describes one content object. Chunks are fetched from the content topics."""

    sha256: Sha256
    size: int = Field(gt=0, le=64 * 1024 * 1024)
    chunk_size: int = Field(ge=1024, le=256 * 1024)
    chunks: int = Field(gt=0)
    codec: str = Field(max_length=32, description="opus | mp3 | pcm_s16le")
    container: str = Field(max_length=32, description="ogg | mp3 | wav")
    duration_ms: int = Field(gt=0)


class LineSpec(_Wire):
    """The board's own input as the source (§6.2): its line-in, or its FM receiver tuned to
    ``frequency_khz``, for ``duration_ms``."""

    input: Literal["line", "fm"]
    frequency_khz: int | None = Field(default=None, ge=64_000, le=108_000)
    duration_ms: int = Field(gt=0, le=24 * 3600 * 1000)


class PlayBody(_Wire):
    broadcast_id: str = Field(max_length=64)
    occurrence_id: str = Field(max_length=64)
    priority: Priority = Priority.NORMAL
    start_at: UtcDatetime
    #: a file to fetch (§6), a real-time stream to join (§6.1), or the board's own input
    #: (§6.2): exactly one of them
    content: ContentManifest | None = None
    stream: StreamSpec | None = None
    line: LineSpec | None = None
    #: play at this volume instead of the cluster's own (an emergency raised to a set level)
    volume_pct: int | None = Field(default=None, ge=0, le=100)
    #: never play this item louder than this (the area's volume cap at that hour)
    max_volume_pct: int | None = Field(default=None, ge=0, le=100)
    #: a play for an occurrence the cluster already holds replaces it when its revision is
    #: higher and the item has not started (the controller updated its content)
    revision: int = Field(default=0, ge=0)
    #: when a higher priority interrupts it: go on from where it stopped, or start over
    after_preempt: Literal["resume", "restart"] = "resume"

    @model_validator(mode="after")
    def _one_source(self) -> PlayBody:
        if sum(x is not None for x in (self.content, self.stream, self.line)) != 1:
            raise ValueError("a play carries one of content, stream or line")
        if self.line is not None and self.line.input == "fm" and self.line.frequency_khz is None:
            raise ValueError("an fm input needs frequency_khz")
        return self

    @property
    def duration_ms(self) -> int:
        source = self.content or self.stream or self.line
        assert source is not None
        return source.duration_ms


class CancelBody(_Wire):
    occurrence_id: str = Field(max_length=64)


class RebirthBody(_Wire):
    pass


class SetVolumeBody(_Wire):
    volume_pct: int = Field(ge=0, le=100)


class SetSpeakerBody(_Wire):
    index: int = Field(ge=1, le=64)
    muted: bool


class EmptyBody(_Wire):
    pass


class SetHeartbeatBody(_Wire):
    heartbeat_s: int = Field(ge=5, le=3600)


COMMAND_BODIES: dict[str, type[_Wire]] = {
    "play": PlayBody,
    "cancel": CancelBody,
    "rebirth": RebirthBody,
    # remote actions: each is acknowledged with an AckEvent (accepted, then done/failed)
    "set_volume": SetVolumeBody,
    "set_speaker": SetSpeakerBody,
    "reboot": EmptyBody,
    "self_test": EmptyBody,
    "report_now": EmptyBody,
    "set_heartbeat": SetHeartbeatBody,
}
ACTION_KINDS = ("set_volume", "set_speaker", "reboot", "self_test", "report_now", "set_heartbeat")


class Command(_Wire):
    """A signed command envelope. ``sig`` covers every other field (see devices.signing)."""

    v: Literal[1]
    id: str = Field(min_length=8, max_length=64)
    kind: str = Field(max_length=32)
    topic: str = Field(max_length=256)
    issued_at: UtcDatetime
    expires_at: UtcDatetime
    key_id: str = Field(max_length=64)
    body: dict[str, Any]
    sig: str | None = None
    _parsed: _Wire | None = PrivateAttr(default=None)

    def parsed_body(self) -> _Wire:
        """The body as its kind's model (validated once, then kept)."""
        if self._parsed is None:
            self._parsed = COMMAND_BODIES[self.kind].model_validate(self.body)
        return self._parsed


# --- cluster -> controller -------------------------------------------------------------------


class SpeakerReport(_Wire):
    index: int = Field(ge=1, le=64)
    state: SpeakerState


class Birth(_Wire):
    """Retained on ``cluster/{id}/status`` after every connect."""

    v: Literal[1]
    cluster_id: WireId
    state: Literal["online"]
    bd_seq: int = Field(ge=0)
    ts: UtcDatetime
    firmware: str = Field(max_length=64)
    heartbeat_s: int = Field(ge=1, le=3600)
    speakers: list[SpeakerReport] = Field(max_length=64)
    cached: list[Sha256] = Field(default_factory=list, max_length=1000)


class Death(_Wire):
    """The Last Will (and the clean-disconnect message) on ``cluster/{id}/status``."""

    v: Literal[1]
    cluster_id: WireId
    state: Literal["offline"]
    bd_seq: int = Field(ge=0)


Status = Annotated[Birth | Death, Field(discriminator="state")]


class Link(_Wire):
    type: Literal["4g", "wifi", "ethernet"]
    rssi_dbm: int | None = Field(default=None, ge=-150, le=0)


class Power(_Wire):
    source: Literal["mains", "battery"]
    battery_pct: int | None = Field(default=None, ge=0, le=100)


class Telemetry(_Wire):
    """Heartbeat on ``cluster/{id}/telemetry`` every ``heartbeat_s`` seconds (QoS 0)."""

    v: Literal[1]
    cluster_id: WireId
    seq: int = Field(ge=0)
    bd_seq: int = Field(ge=0)
    ts: UtcDatetime
    uptime_s: int = Field(ge=0)
    firmware: str = Field(max_length=64)
    link: Link
    power: Power
    amp_temp_c: float = Field(ge=-40, le=150)
    volume_pct: int = Field(ge=0, le=100)
    storage_free_kb: int = Field(ge=0)
    clock_offset_ms: int
    playing: str | None = Field(default=None, max_length=64)
    speakers: list[SpeakerReport] = Field(max_length=64)


class StreamStats(_Wire):
    """What a board heard of a stream (§6.1), reported with its final state."""

    played_ms: int = Field(ge=0)
    #: batches that were missing (or came too late) at their play time, and their length
    gaps: int = Field(ge=0)
    gap_ms: int = Field(ge=0)
    #: the first batch it played was not the stream's first (it joined an airing under way)
    joined_late: bool = False


class DeliveryEvent(_Wire):
    v: Literal[1]
    kind: Literal["delivery"]
    cluster_id: WireId
    seq: int = Field(ge=0)
    ts: UtcDatetime
    command_id: str | None = Field(default=None, max_length=64)
    occurrence_id: str = Field(max_length=64)
    state: DeliveryState
    at: UtcDatetime
    reason: str | None = Field(default=None, max_length=256)
    #: the revision of the play this report is about (what content, which start time)
    revision: int | None = Field(default=None, ge=0)
    #: a stream's figures, with its final state (played, cancelled, failed)
    stream: StreamStats | None = None


class RefusedEvent(_Wire):
    v: Literal[1]
    kind: Literal["refused"]
    cluster_id: WireId
    seq: int = Field(ge=0)
    ts: UtcDatetime
    command_id: str | None = Field(default=None, max_length=64)
    topic: str = Field(max_length=256)
    reason: RefusalReason
    detail: str | None = Field(default=None, max_length=256)


class ContentRequest(_Wire):
    """Ask the controller to publish chunks of a content object (``missing`` None = all)."""

    v: Literal[1]
    kind: Literal["content_request"]
    cluster_id: WireId
    seq: int = Field(ge=0)
    ts: UtcDatetime
    sha256: Sha256
    missing: list[int] | None = Field(default=None, max_length=4096)


class SpeakerTest(_Wire):
    """One speaker line in a self-test: the board plays a test tone and measures."""

    index: int = Field(ge=1, le=64)
    state: SpeakerState
    impedance_ohm: float | None = Field(default=None, ge=0)
    level_db: float | None = Field(default=None, ge=0, le=200, description="SPL at 1 m")


class AckEvent(_Wire):
    """Outcome of a remote action: ``accepted`` at once, then ``done`` or ``failed``."""

    v: Literal[1]
    kind: Literal["ack"]
    cluster_id: WireId
    seq: int = Field(ge=0)
    ts: UtcDatetime
    command_id: str = Field(max_length=64)
    action: str = Field(max_length=32)
    status: Literal["accepted", "done", "failed"]
    result: dict[str, Any] | None = None
    reason: str | None = Field(default=None, max_length=256)


Event = Annotated[DeliveryEvent | RefusedEvent | ContentRequest | AckEvent,
                  Field(discriminator="kind")]


class ControllerStatus(_Wire):
    """Retained on ``loa/v1/controller/status``; its Last Will says offline."""

    v: Literal[1]
    state: Literal["online", "offline"]
    ts: UtcDatetime | None = None


class MessageError(ValueError):
    """A payload that is not a valid message of the expected type."""


_status = TypeAdapter(Status)
_event = TypeAdapter(Event)
_telemetry = TypeAdapter(Telemetry)


def _parse(adapter: TypeAdapter[Any], payload: bytes) -> Any:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise MessageError(f"payload too large ({len(payload)} bytes)")
    try:
        return adapter.validate_json(payload)
    except ValidationError as exc:
        raise MessageError(str(exc.errors(include_url=False)[:3])) from None


def parse_status(payload: bytes) -> Birth | Death:
    return _parse(_status, payload)  # type: ignore[no-any-return]


def parse_telemetry(payload: bytes) -> Telemetry:
    return _parse(_telemetry, payload)  # type: ignore[no-any-return]


def parse_event(payload: bytes) -> DeliveryEvent | RefusedEvent | ContentRequest | AckEvent:
    return _parse(_event, payload)  # type: ignore[no-any-return]


def dumps(message: BaseModel) -> bytes:
    """Serialise a wire message as compact UTF-8 JSON."""
    return message.model_dump_json(exclude_none=False).encode()


def now_utc() -> datetime:
    return datetime.now(UTC)
