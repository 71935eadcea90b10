"""MQTT topic layout of protocol v1.

Every topic starts with ``loa/v1``. Identifiers (area and cluster ids) are 1-64 characters of
``[a-z0-9._-]`` so they can never contain MQTT wildcards or separators.

A command for an area is published **once** on that area's command topic; each cluster
subscribes to its own command topic and to the command topic of every ancestor area, so
every cluster beneath the area receives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

ROOT = "loa/v1"
#: An area or cluster id: 1-64 of a-z 0-9 . _ - , starting with a letter or digit. The
#: pattern is matched whole (messages validate it in pydantic's Rust regex, where ``$`` is
#: the end of the text; here ``fullmatch``, so a trailing newline is refused in both).
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN.strip("^$"))

CONTROLLER_STATUS = f"{ROOT}/controller/status"

#: Subscriptions the controller makes to hear every cluster.
CLUSTER_STATUS_ALL = f"{ROOT}/cluster/+/status"
CLUSTER_TELEMETRY_ALL = f"{ROOT}/cluster/+/telemetry"
CLUSTER_EVENT_ALL = f"{ROOT}/cluster/+/event"
CLUSTER_TIME_ALL = f"{ROOT}/cluster/+/time"

__all__ = [
    "CLUSTER_EVENT_ALL",
    "CLUSTER_STATUS_ALL",
    "CLUSTER_TELEMETRY_ALL",
    "CLUSTER_TIME_ALL",
    "CONTROLLER_STATUS",
    "ID_PATTERN",
    "ROOT",
    "ClusterTopic",
    "InvalidId",
    "area_cmd",
    "area_content_chunk",
    "area_content_filter",
    "check_id",
    "cluster_cmd",
    "cluster_event",
    "cluster_status",
    "cluster_telemetry",
    "cluster_time",
    "cluster_time_reply",
    "content_chunk",
    "content_chunks_filter",
    "parse_cluster_topic",
    "parse_content_topic",
    "valid_id",
]


class InvalidId(ValueError):
    """An area or cluster id that is not allowed in a topic."""


def valid_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))


def check_id(value: str) -> str:
    if not valid_id(value):
        raise InvalidId(f"invalid id {value!r}: use 1-64 characters of a-z 0-9 . _ -")
    return value


def area_cmd(area_id: str) -> str:
    return f"{ROOT}/area/{check_id(area_id)}/cmd"


def cluster_cmd(cluster_id: str) -> str:
    return f"{ROOT}/cluster/{check_id(cluster_id)}/cmd"


def cluster_status(cluster_id: str) -> str:
    return f"{ROOT}/cluster/{check_id(cluster_id)}/status"


def cluster_telemetry(cluster_id: str) -> str:
    return f"{ROOT}/cluster/{check_id(cluster_id)}/telemetry"


def cluster_event(cluster_id: str) -> str:
    return f"{ROOT}/cluster/{check_id(cluster_id)}/event"


def cluster_time(cluster_id: str) -> str:
    """A board's clock-synchronisation request (protocol §4.5)."""
    return f"{ROOT}/cluster/{check_id(cluster_id)}/time"


def cluster_time_reply(cluster_id: str) -> str:
    """The controller's signed answer to it."""
    return f"{ROOT}/cluster/{check_id(cluster_id)}/time/reply"


def content_chunk(sha256: str, index: int) -> str:
    return f"{ROOT}/content/{_check_sha(sha256)}/{int(index)}"


def content_chunks_filter(sha256: str) -> str:
    return f"{ROOT}/content/{_check_sha(sha256)}/+"


def area_content_chunk(area_id: str, sha256: str, index: int) -> str:
    """An emergency's chunk pushed to every cluster beneath ``area_id`` (protocol §6)."""
    return f"{ROOT}/area/{check_id(area_id)}/content/{_check_sha(sha256)}/{int(index)}"


def area_content_filter(area_id: str) -> str:
    """What a cluster subscribes to, for each of its areas, to receive pushed chunks."""
    return f"{ROOT}/area/{check_id(area_id)}/content/+/+"


_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_sha(sha256: str) -> str:
    if not _SHA_RE.match(sha256):
        raise ValueError(f"invalid sha256 {sha256!r}")
    return sha256


@dataclass(frozen=True, slots=True)
class ClusterTopic:
    """A parsed ``loa/v1/cluster/{id}/{kind}`` topic."""

    cluster_id: str
    kind: str  # "status" | "telemetry" | "event" | "cmd" | "time"


@lru_cache(maxsize=1 << 16)  # the same few topics per cluster, thousands of times a second
def parse_cluster_topic(topic: str) -> ClusterTopic | None:
    """Parse a cluster topic; None when the topic is not one (never raises)."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT or parts[2] != "cluster":
        return None
    if not valid_id(parts[3]) or parts[4] not in ("status", "telemetry", "event", "cmd", "time"):
        return None
    return ClusterTopic(parts[3], parts[4])


def parse_content_topic(topic: str) -> tuple[str, int] | None:
    """Parse ``loa/v1/content/{sha256}/{index}`` or an area's pushed chunk
    ``loa/v1/area/{id}/content/{sha256}/{index}``; None when it is neither."""
    parts = topic.split("/")
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != ROOT:
        return None
    if len(parts) == 7 and parts[2] == "area" and valid_id(parts[3]) and parts[4] == "content":
        parts = parts[:2] + parts[4:]
    if len(parts) != 5 or parts[2] != "content":
        return None
    if not _SHA_RE.match(parts[3]) or not parts[4].isdigit() or len(parts[4]) > 6:
        return None
    return parts[3], int(parts[4])
