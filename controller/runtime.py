"""Wires the controller's parts together and runs them for the life of the app."""

from __future__ import annotations

import gc
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from audio import AudioSettings, EspeakNg, TTSEngine
from controller.access.keys import load_or_create_signing_key
from controller.access.security import LoginThrottle, ensure_admin
from controller.broadcasting.content_server import ContentServer
from controller.broadcasting.dispatcher import Dispatcher
from controller.broadcasting.scheduling import Scheduler
from controller.broadcasting.spool import Spool
from controller.db.lock import DatabaseLock
from controller.db.models import ContentBlob
from controller.db.session import make_engine, make_sessionmaker, upgrade
from controller.fleet.actions import ActionService
from controller.fleet.alerts import AlertManager, WebhookSender
from controller.fleet.health import HealthTracker
from controller.fleet.history import TelemetryHistory
from controller.fleet.provisioning import BrokerSync
from controller.ingest import Ingest
from controller.limits import RateLimit
from controller.live.streams import Streams
from controller.settings import Settings
from controller.storage import StorageMonitor
from controller.timesvc import TimeService
from controller.transport.link import Link, Outbound
from controller.transport.mqtt import make_link
from devices import topics
from devices.messages import ControllerStatus, dumps, now_utc

log = logging.getLogger(__name__)

#: what the controller hears: every cluster's status (births, deaths), telemetry, events
SUBSCRIPTIONS = [(topics.CLUSTER_STATUS_ALL, 1), (topics.CLUSTER_TELEMETRY_ALL, 0),
                 (topics.CLUSTER_EVENT_ALL, 1), (topics.CLUSTER_TIME_ALL, 0)]


def _announce() -> Outbound:
    """Said (retained) on every connection: a fresh ``ts`` tells clusters to re-send births."""
    return Outbound(topics.CONTROLLER_STATUS,
                    dumps(ControllerStatus(v=1, state="online", ts=now_utc())), 1, True)

__all__ = ["Runtime"]


def _private(settings: Settings) -> None:
    """The data folder and a SQLite database in it are the controller's alone (0700,
    0600): they hold the signing key, password hashes, boards' credential hashes."""
    try:
        os.chmod(settings.data_dir, 0o700)
        if settings.db_url.startswith("sqlite:///"):
            db = Path(settings.db_url.removeprefix("sqlite:///"))
            for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                if f.exists():
                    os.chmod(f, 0o600)
    except OSError as exc:  # (a folder not ours: the operator's choice)
        log.warning("cannot make %s private: %s", settings.data_dir, exc)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    key: SigningKey
    link: Link
    health: HealthTracker
    content: ContentServer
    dispatcher: Dispatcher
    scheduler: Scheduler
    ingest: Ingest
    actions: ActionService
    alerts: AlertManager
    webhooks: WebhookSender
    tts: TTSEngine
    storage: StorageMonitor
    lock: DatabaseLock
    broker: BrokerSync
    generated_admin_password: str | None = None
    started: bool = field(default=False)
    #: failed logins per client address
    logins: LoginThrottle = field(default_factory=LoginThrottle)
    #: audio each account may have prepared (uploads, text to speech); set in build()
    audio_work: RateLimit = field(default_factory=RateLimit)
    #: work a request starts and does not wait for (the rest of a CAP emergency's audio)
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="loa-background"))
    #: answers the boards' clock requests (protocol §4.5); set in build()
    clock: TimeService | None = None
    #: the live and relay sessions (protocol §6.1); set in build()
    streams: Streams | None = None

    @classmethod
    def build(cls, settings: Settings, migrate: bool = True, link: Link | None = None,
              lock: DatabaseLock | None = None) -> Runtime:
        """Every part, wired; ``link`` replaces the broker connection (tests: a
        :class:`~controller.transport.memory.MemoryLink`); ``lock``: the database's lock,
        already held (a standby that waited for it), kept if the build fails."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        held = lock
        if lock is None:
            lock = DatabaseLock(settings.db_url)
            lock.acquire()  # before anything runs: a second controller stops here
        try:
            return cls._build(settings, lock, migrate, link)
        except BaseException:
            if held is None:
                lock.release()
            raise

    @classmethod
    def _build(cls, settings: Settings, lock: DatabaseLock, migrate: bool,
               link: Link | None) -> Runtime:
        if migrate:
            upgrade(settings.db_url)
        _private(settings)
        engine = make_engine(settings.db_url)
        sessions = make_sessionmaker(engine)
        key = load_or_create_signing_key(settings.data_dir)
        host, port, user, password = settings.mqtt
        if link is None:
            link = make_link(host, port, user, password, protocol=settings.mqtt_protocol,
                             will=Outbound(topics.CONTROLLER_STATUS,
                                           dumps(ControllerStatus(v=1, state="offline")), 1,
                                           True),
                             announce=_announce, client_id=settings.client_id,
                             session_expiry_s=settings.mqtt_session_expiry_s,
                             tls=settings.mqtt_tls(), more=settings.mqtt_nodes[1:],
                             retained_every_node=settings.mqtt_retained_every_node)
        link.subscribe(SUBSCRIPTIONS)
        clock = TimeService(link, key)
        link.fast = clock.handle

        def load_blob(sha: str) -> bytes | None:
            with sessions() as db:
                blob = db.get(ContentBlob, sha)
                return blob.data if blob else None

        content = ContentServer(link.publish, load_blob, settings.chunk_size)
        webhooks = WebhookSender(settings.alert_webhooks)
        storage = StorageMonitor(webhooks)
        dispatcher = Dispatcher(settings, sessions, key, link.publish, content,
                                link.wait_written, spool=Spool(settings.data_dir / "spool"),
                                storage=storage, link_up=link.connected.is_set)
        link.on_connect(dispatcher.link_returned)
        alerts = AlertManager(webhooks)
        health = HealthTracker(settings.heartbeat_timeout_factor, settings.default_heartbeat_s,
                               alerts)
        scheduler = Scheduler(dispatcher, settings.dispatch_lead_s)
        actions = ActionService(key, link.publish)
        ingest = Ingest(link, sessions, health, dispatcher, content, actions, TelemetryHistory(),
                        storage=storage)
        link.early = ingest.serve_early
        with sessions() as db:
            generated = ensure_admin(db, settings.admin_password)
        rt = cls(settings, engine, sessions, key, link, health, content, dispatcher, scheduler,
                 ingest, actions, alerts, webhooks, EspeakNg(), storage, lock,
                 BrokerSync(settings, sessions), generated)
        rt.audio_work = RateLimit(settings.audio_burst, settings.audio_per_hour / 3600)
        rt.clock = clock
        rt.streams = Streams(settings, sessions, key, link.publish)
        dispatcher.streams = rt.streams
        return rt

    def audio_settings(self, chime: bool | None = None) -> AudioSettings:
        s = self.settings
        use_chime = s.chime if chime is None else chime
        return AudioSettings(
            target_lufs=s.target_lufs, codec=s.audio_codec, bitrate=s.audio_bitrate,
            max_input_bytes=int(s.max_upload_mb * 1024 * 1024), max_duration_s=s.max_duration_s,
            chime_before=use_chime, chime_after=use_chime,
        )

    def start(self) -> None:
        if self.broker.enabled:  # the broker lets in exactly the boards the registry holds
            self.broker.sync()
        self.link.start()
        self.content.start()
        self.ingest.start()
        self.scheduler.start()
        with self.sessions() as db:
            planned = self.scheduler.reconcile(db)
        recovered = self.dispatcher.recover()
        with self.sessions() as db:
            streams = self.dispatcher.resume_streams(db)
        log.info("controller started: %d slot(s) planned, %d occurrence(s) recovered, %d "
                 "stream(s) resumed", planned, recovered, streams)
        # what exists now (modules, mappers, schemas, every cluster's view) lives as long as
        # the process: out of the cyclic collector's reach, its full collections (seen at
        # 0.2-0.5 s with 5,000 clusters) walk only what is newer
        gc.collect()
        gc.freeze()
        self.started = True

    def stop(self) -> None:
        if not self.started:
            self.lock.release()
            return
        self.ingest.stop()  # first: no more database work from MQTT
        self.content.stop()
        self.background.shutdown(wait=True, cancel_futures=True)
        self.scheduler.shutdown()
        self.link.stop()
        self.webhooks.stop()
        self.engine.dispose()
        self.lock.release()
        self.started = False
