"""Settings from ``LOA_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import hashlib
import json
import ssl
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["WEAK_SECRETS", "Settings"]

#: secrets that ship in examples and guides: refused in production
WEAK_SECRETS = frozenset({"change-me", "changeme", "admin", "password", "secret", "loa",
                          "12345678", "123456789012", "loa-admin", "adminadmin"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_", extra="ignore")

    env: Literal["development", "production"] = Field(
        "development", description="production refuses a missing admin password")
    data_dir: Path = Field(Path(".loa"), description="signing key, SQLite database, logs")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    mqtt_url: str | None = Field(None, description="mqtt://[user:pass@]host:port, or "
                                 "mqtts://… for TLS (port 8883 by default); the nodes of "
                                 "one broker cluster comma-separated (the credentials and "
                                 "scheme of the first), tried in turn (MQTT 5; a 3.1.1 "
                                 "link uses the first)")
    mqtt_ca_file: Path | None = Field(
        None, description="PEM of the CA that signed the broker's TLS certificate (loa broker "
                          "tls makes one); given to boards in their bundles too. Unset with "
                          "mqtts: the system's CAs")
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version to the broker: auto tries MQTT 5 first and falls "
                            "back to 3.1.1 for a broker that speaks only that (amqtt)")
    mqtt_client_id: str | None = Field(
        None, description="the controller's MQTT client id; default loa-controller-<hash of "
                          "the database URL>, the same on every start, so its broker session "
                          "(what clusters reported while it was down) is taken up again")
    mqtt_retained_every_node: bool = Field(
        False, description="publish the controller's retained messages (its status, an "
                           "emergency's chunks) through every node of LOA_MQTT_URL too: for a "
                           "broker cluster whose retained messages stay on the node they were "
                           "published on (RabbitMQ 3.x)")
    mqtt_session_expiry_s: int = Field(
        86400, ge=0, description="how long the broker keeps the controller's session and "
                                 "queues reports for it while it is down (0: no session)")
    admin_password: str | None = Field(None, description="password of the bootstrap admin")
    timezone: str = Field("Asia/Ho_Chi_Minh", description="local time of schedules")
    dispatch_lead_s: float = Field(60.0, ge=1, description="send commands this long before start")
    min_start_lead_s: float = Field(3.0, ge=0, description="earliest start after the API call")
    late_grace_s: float = Field(300.0, ge=0, description="how late an occurrence may still start")
    report_grace_s: float = Field(120.0, ge=5, description="wait for reports after the end")
    heartbeat_timeout_factor: float = Field(1.5, ge=1.0)
    default_heartbeat_s: int = Field(30, ge=1)
    max_upload_mb: float = Field(50.0, gt=0)
    max_duration_s: float = Field(45 * 60.0, gt=0)
    audio_codec: Literal["opus", "mp3", "pcm_s16le"] = "opus"
    audio_bitrate: str = "32k"
    target_lufs: float = -16.0
    chime: bool = Field(True, description="chime before and after each announcement")
    chunk_size: int = Field(16 * 1024, ge=1024, le=256 * 1024)
    audio_burst: int = Field(20, ge=1, description="uploads and texts to speak one account "
                             "may send at once")
    audio_per_hour: int = Field(120, ge=1, description="and per hour after that (429 "
                                "rate_limited past it)")
    token_ttl_s: int = Field(1800, ge=60, description="life of an access token; the console "
                             "renews it with its refresh token")
    refresh_ttl_s: int = Field(12 * 3600, ge=300, description="life of a refresh token: "
                               "how long a session lasts without a login")
    emergency_lead_s: float = Field(
        1.0, ge=0.0, description="an emergency starts this soon after the call; 0 = each "
        "cluster starts as soon as it holds the content (fastest, not simultaneous)")
    after_preempt: Literal["resume", "restart"] = Field(
        "resume", description="what an interrupted item does once the speakers are free "
        "(a broadcast may say otherwise)")
    programme_gap_s: float = Field(2.0, ge=0, le=60,
                                   description="silence between items in one programme")
    emergency_volume_pct: int | None = Field(100, ge=0, le=100,
                                             description="volume an emergency plays at")
    alert_webhooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="URLs that receive alert opened/resolved as JSON POST "
                                          "(env: JSON list or comma-separated)")
    metrics_public: bool = Field(False, description="serve /metrics without a token")
    broker_files_dir: Path | None = Field(
        None, description="write the broker's password_file and acl_file here (Mosquitto "
                          "format) from the registry, after every provisioning change")
    broker_pid_file: Path | None = Field(
        None, description="the broker's pid file: SIGHUP after the files change, so it "
                          "re-reads them")
    broker_observer_password: str | None = Field(
        None, description="password of the broker's read-only user loa-observer (watch "
                          "loa/# with mosquitto_sub); unset: no such user")
    broker_public_url: str | None = Field(
        None, description="the broker address boards are given in their bundles "
                          "(mqtt://host:port or mqtts://host:port); default: LOA_MQTT_URL "
                          "without its credentials")
    cap_priority_rules: list[dict[str, Any]] | None = Field(
        None, description="CAP urgency/severity/certainty -> priority table (JSON list of "
                          "{urgency, severity, certainty, priority}; '*' matches any); "
                          "default: controller.cap.alert.DEFAULT_PRIORITY_RULES")

    cap_sender: str | None = Field(
        None, description="the <sender> of the controller's CAP answers (Ack); default "
                          "loa-controller@<this host's name>")
    cap_onset_lead_s: float = Field(
        1800.0, ge=0, description="a CAP alert that is not an emergency airs this long "
                                  "before its <onset> (never before now)")
    cap_trusted_certs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="PEM certificates of CAP issuers whose XML-DSig "
        "signatures are trusted (env: JSON list or comma-separated paths)")
    cap_require_signature: bool = Field(
        False, description="refuse CAP alerts that are not signed by a trusted issuer")
    cap_languages: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["vi"], description="languages CAP <info> blocks are aired "
        "in, in this order (env: JSON list or comma-separated BCP 47 prefixes); a block in "
        "another language airs only where no block in one of these covers the cluster")
    cap_geocodes: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="CAP <geocode> valueName -> {value -> our area id} "
        '(JSON), e.g. {"VN-DVHC": {"<commune code>": "vn-vp-tamduong-huongdao"}}; '
        "valueName LOA, or any value equal to an area id, needs no entry")
    cap_resource_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hosts a CAP <resource><uri> may be fetched from "
        "(env: JSON list or comma-separated); empty: any host")
    relay_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hosts a relayed radio stream may be pulled from "
        "(env: JSON list or comma-separated); empty: any host")
    stream_latency_ms: int = Field(800, ge=200, le=10_000, description="a live or relayed "
                                   "frame is heard this long after the controller stamps it")
    stream_source_timeout_s: float = Field(5.0, gt=0, le=120, description="a stream source "
                                           "silent this long is stopped (and an alert raised)")
    live_max_s: int = Field(3600, ge=10, le=6 * 3600, description="the longest a live "
                            "session may run")
    cap_resource_max_mb: float = Field(20.0, gt=0, description="largest CAP recording fetched")
    cap_resource_timeout_s: float = Field(15.0, gt=0, description="deadline for fetching a "
                                          "CAP recording from its <uri>")

    @field_validator("alert_webhooks", "cap_trusted_certs", "cap_languages", "relay_hosts",
                     "cap_resource_hosts", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            return json.loads(v) if v.startswith("[") else [u.strip() for u in v.split(",") if u.strip()]
        return v

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.env != "production":
            return self
        if not self.admin_password:
            raise ValueError("LOA_ADMIN_PASSWORD must be set when LOA_ENV=production")
        if self.admin_password.lower() in WEAK_SECRETS or len(self.admin_password) < 12:
            raise ValueError("LOA_ADMIN_PASSWORD is a well-known default or shorter than 12 "
                             "characters: refused when LOA_ENV=production")
        return self

    @cached_property
    def db_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{(self.data_dir / 'loa.db').resolve()}"

    @cached_property
    def client_id(self) -> str:
        if self.mqtt_client_id:
            return self.mqtt_client_id
        return "loa-controller-" + hashlib.sha256(self.db_url.encode()).hexdigest()[:12]

    @cached_property
    def mqtt(self) -> tuple[str, int, str | None, str | None]:
        """The first broker node, and the credentials for every node."""
        u = urlparse(self._mqtt_urls[0])
        host, port = self.mqtt_nodes[0]
        return host, port, u.username, u.password

    @cached_property
    def _mqtt_urls(self) -> list[str]:
        first, *more = (self.mqtt_url or "mqtt://127.0.0.1:1883").split(",")
        scheme = first.split("://", 1)[0] if "://" in first else "mqtt"
        return [first, *(m if "://" in m else f"{scheme}://{m}" for m in more if m.strip())]

    @cached_property
    def mqtt_nodes(self) -> list[tuple[str, int]]:
        """Every broker node ``mqtt_url`` names, in order (host, port)."""
        out = []
        for url in self._mqtt_urls:
            u = urlparse(url.strip())
            out.append((u.hostname or "127.0.0.1", u.port or (8883 if u.scheme == "mqtts"
                                                               else 1883)))
        return out

    def mqtt_tls(self) -> ssl.SSLContext | None:
        """The TLS context for an ``mqtts://`` broker (verifying its certificate and name
        against ``mqtt_ca_file``, else the system's CAs); None for ``mqtt://``."""
        if urlparse(self.mqtt_url or "").scheme != "mqtts":
            return None
        return ssl.create_default_context(
            cafile=str(self.mqtt_ca_file) if self.mqtt_ca_file else None)
