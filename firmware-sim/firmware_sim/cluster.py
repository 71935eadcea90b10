"""One simulated cluster: an MQTT client that behaves like the smart-radio board.

Connects with its own client id and a Last Will (retained ``offline`` with its bd_seq),
publishes a retained birth, subscribes to its own and its ancestors' command topics,
verifies every command (Ed25519, topic, expiry, replay), fetches content in chunks and checks
its sha256, plays at the commanded time by its own clock, and reports every step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
from nacl.signing import VerifyKey

from devices import topics
from devices.areas import Cluster
from devices.messages import (
    Birth,
    CancelBody,
    Command,
    ContentRequest,
    ControllerStatus,
    Death,
    DeliveryEvent,
    DeliveryState,
    Link,
    PlayBody,
    Power,
    RefusedEvent,
    SpeakerReport,
    SpeakerState,
    Telemetry,
    dumps,
)
from devices.signing import CommandVerifier, Refused
from firmware_sim.content import Assembly, SharedStore
from firmware_sim.player import Occurrence, Player

log = logging.getLogger(__name__)

__all__ = ["SimConfig", "SimCluster"]

FIRMWARE = "loa-sim/0.1.0"


@dataclass(slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    keys: list[VerifyKey] = field(default_factory=list)
    heartbeat_s: float = 30.0
    record_dir: Path | None = None
    password: str | None = None
    content_retry_s: float = 2.0
    content_max_requests: int = 8
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    seed: int = 0


class SimCluster:
    def __init__(self, cluster: Cluster, area_path: list[str], cfg: SimConfig,
                 store: SharedStore | None = None):
        self.cluster = cluster
        self.id = cluster.id
        self.area_path = area_path
        self.cfg = cfg
        self.store = store or SharedStore()
        self.rng = random.Random(f"{cfg.seed}:{cluster.id}")
        self.clock_offset = timedelta(0)
        self.verifier = CommandVerifier(cfg.keys)
        self.cached: set[str] = set()
        self.assemblies: dict[str, Assembly] = {}
        self.waiting: dict[str, list[Occurrence]] = {}
        self.player = Player(self.now, self._report_delivery, self._record)
        self.bd_seq = 0
        self.seq = 0
        self.volume_pct = 80
        self.speakers = {s.index: SpeakerState.OK for s in cluster.speakers}
        self.boot = time.monotonic()
        self.connected = asyncio.Event()
        self.refusals: list[RefusedEvent] = []
        self._client: aiomqtt.Client | None = None
        self._outbox: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue()
        self._controller_ts: datetime | None = None
        self._handlers: dict[str, Callable[[Command], object]] = {
            "play": self._on_play,
            "cancel": self._on_cancel,
            "rebirth": self._on_rebirth,
        }

    # --- clock ------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    # --- connection ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stay connected until cancelled, reconnecting with jittered exponential back-off."""
        backoff = self.cfg.reconnect_min_s
        while True:
            try:
                await self._session()
                backoff = self.cfg.reconnect_min_s
            except aiomqtt.MqttError as exc:
                log.debug("%s: link down: %s", self.id, exc)
            finally:
                self.connected.clear()
                self._client = None
            if stop is not None and stop.is_set():
                return
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    async def _session(self) -> None:
        self.bd_seq += 1  # seq keeps counting: events queued offline keep their numbers
        will = aiomqtt.Will(
            topics.cluster_status(self.id),
            dumps(Death(v=1, cluster_id=self.id, state="offline", bd_seq=self.bd_seq)),
            qos=1, retain=True,
        )
        keepalive = max(5, int(self.cfg.heartbeat_s))
        async with aiomqtt.Client(
            self.cfg.host, self.cfg.port, identifier=f"cluster-{self.id}", will=will,
            keepalive=keepalive, clean_session=True, username=self.id,
            password=self.cfg.password, protocol=aiomqtt.ProtocolVersion.V311,
            max_inflight_messages=100,
        ) as client:
            self._client = client
            subs = [(topics.cluster_cmd(self.id), 1), (topics.CONTROLLER_STATUS, 1)]
            subs += [(topics.area_cmd(a), 1) for a in self.area_path]
            subs += [(topics.content_chunks_filter(s), 1) for s in self.assemblies]
            await client.subscribe(subs)
            await self._publish_birth()
            self.connected.set()
            tasks = [asyncio.create_task(self._heartbeats()),
                     asyncio.create_task(self._drain_outbox())]
            try:
                async for msg in client.messages:
                    self._dispatch(msg.topic.value, bytes(msg.payload))  # type: ignore[arg-type]
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish_birth(self) -> None:
        assert self._client is not None
        birth = Birth(
            v=1, cluster_id=self.id, state="online", bd_seq=self.bd_seq, ts=self.now(),
            firmware=FIRMWARE, heartbeat_s=max(1, round(self.cfg.heartbeat_s)),
            speakers=self._speaker_reports(), cached=sorted(self.cached)[:1000],
        )
        await self._client.publish(topics.cluster_status(self.id), dumps(birth), qos=1, retain=True)

    async def stop(self) -> None:
        """Clean shutdown: publish offline (retained) ourselves, then disconnect."""
        await self.player.close()
        if self._client is not None:
            death = Death(v=1, cluster_id=self.id, state="offline", bd_seq=self.bd_seq)
            try:
                await self._client.publish(topics.cluster_status(self.id), dumps(death),
                                           qos=1, retain=True, timeout=2)
            except aiomqtt.MqttError:
                pass

    # --- outgoing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue for publishing; survives link loss (sent after reconnect)."""
        self._outbox.put_nowait((topic, payload, qos))

    async def _drain_outbox(self) -> None:
        while True:
            topic, payload, qos = await self._outbox.get()
            client = self._client
            if client is None:
                self._outbox.put_nowait((topic, payload, qos))
                return
            try:
                await client.publish(topic, payload, qos=qos)
            except aiomqtt.MqttError:
                # put it back in front: keep order by re-queueing the rest behind it
                rest = [(topic, payload, qos)]
                while not self._outbox.empty():
                    rest.append(self._outbox.get_nowait())
                for item in rest:
                    self._outbox.put_nowait(item)
                raise

    async def _heartbeats(self) -> None:
        while True:
            self._send(topics.cluster_telemetry(self.id), dumps(self.telemetry()), qos=0)
            await asyncio.sleep(self.cfg.heartbeat_s)

    def telemetry(self) -> Telemetry:
        playing = self.player.current
        base_temp = 38.0 + (12.0 if playing else 0.0)
        return Telemetry(
            v=1, cluster_id=self.id, seq=self._next_seq(), bd_seq=self.bd_seq, ts=self.now(),
            uptime_s=int(time.monotonic() - self.boot), firmware=FIRMWARE,
            link=Link(type="4g", rssi_dbm=-70 - self.rng.randint(0, 15)),
            power=Power(source="mains", battery_pct=100),
            amp_temp_c=round(base_temp + self.rng.random() * 2, 1), volume_pct=self.volume_pct,
            storage_free_kb=512_000 - 64 * len(self.cached),
            clock_offset_ms=int(self.clock_offset.total_seconds() * 1000),
            playing=playing.id if playing else None, speakers=self._speaker_reports(),
        )

    def _speaker_reports(self) -> list[SpeakerReport]:
        return [SpeakerReport(index=i, state=s) for i, s in sorted(self.speakers.items())]

    async def _report_delivery(self, occ: Occurrence, state: DeliveryState, at: datetime,
                               reason: str | None) -> None:
        self._emit_delivery(occ, state, at, reason)

    def _emit_delivery(self, occ: Occurrence, state: DeliveryState, at: datetime,
                       reason: str | None) -> None:
        ev = DeliveryEvent(
            v=1, kind="delivery", cluster_id=self.id, seq=self._next_seq(), ts=self.now(),
            command_id=occ.command_id, occurrence_id=occ.id, state=state, at=at, reason=reason,
        )
        self._send(topics.cluster_event(self.id), dumps(ev))

    def _refuse(self, topic: str, exc: Refused) -> None:
        ev = RefusedEvent(
            v=1, kind="refused", cluster_id=self.id, seq=self._next_seq(), ts=self.now(),
            command_id=exc.command_id, topic=topic, reason=exc.reason,
            detail=exc.detail[:256] or None,
        )
        self.refusals.append(ev)
        log.warning("%s refused command on %s: %s", self.id, topic, exc)
        self._send(topics.cluster_event(self.id), dumps(ev))

    def _record(self, occ: Occurrence, started: datetime, finished: datetime) -> None:
        if self.cfg.record_dir is None or occ.content is None:
            return
        folder = self.cfg.record_dir / self.id
        folder.mkdir(parents=True, exist_ok=True)
        ext = occ.body.content.container
        (folder / f"{occ.id}.{ext}").write_bytes(occ.content)
        (folder / f"{occ.id}.json").write_text(json.dumps({
            "occurrence_id": occ.id, "sha256": occ.body.content.sha256,
            "started_at": started.isoformat(), "finished_at": finished.isoformat(),
        }))

    # --- incoming -------------------------------------------------------------------------

    def _dispatch(self, topic: str, payload: bytes) -> None:
        content = topics.parse_content_topic(topic)
        if content is not None:
            self._on_chunk(content[0], content[1], payload)
        elif topic == topics.CONTROLLER_STATUS:
            self._on_controller_status(payload)
        else:
            self._on_command(topic, payload)

    def _on_command(self, topic: str, payload: bytes) -> None:
        try:
            cmd = self.verifier.verify(payload, topic, self.now())
        except Refused as exc:
            self._refuse(topic, exc)
            return
        self._handlers[cmd.kind](cmd)

    def _on_controller_status(self, payload: bytes) -> None:
        try:
            status = ControllerStatus.model_validate_json(payload)
        except ValueError:
            return
        if status.state != "online":
            return
        # a restarted controller announces itself: re-send our birth so it rebuilds its view
        if self._controller_ts is not None and status.ts != self._controller_ts:
            asyncio.get_running_loop().create_task(self._rebirth())
        self._controller_ts = status.ts

    async def _rebirth(self) -> None:
        try:
            await self._publish_birth()
            self._send(topics.cluster_telemetry(self.id), dumps(self.telemetry()), qos=0)
        except aiomqtt.MqttError:
            pass

    def _on_rebirth(self, _cmd: Command) -> None:
        asyncio.get_running_loop().create_task(self._rebirth())

    def _on_cancel(self, cmd: Command) -> None:
        body = CancelBody.model_validate(cmd.body)
        self.player.cancel(body.occurrence_id)

    def _on_play(self, cmd: Command) -> None:
        body = PlayBody.model_validate(cmd.body)
        known = self.player.occurrences.get(body.occurrence_id)
        if known is not None:
            # the controller re-sent it (after its restart or our reconnect): say where we are
            self._emit_delivery(known, known.state, self.now(), known.failure)
            return
        occ = Occurrence(body=body, command_id=cmd.id, expires_at=cmd.expires_at)
        self._emit_delivery(occ, DeliveryState.RECEIVED, self.now(), None)
        self.player.schedule(occ)
        sha = body.content.sha256
        data = self.store.get(sha) if sha in self.cached else None
        if data is not None:
            occ.content = data
            occ.content_ready.set()
            return
        self.waiting.setdefault(sha, []).append(occ)
        if sha not in self.assemblies:
            self.assemblies[sha] = Assembly(body.content)
            asyncio.get_running_loop().create_task(self._fetch(sha))

    async def _fetch(self, sha: str) -> None:
        """Subscribe to the content's chunks, ask for them, re-ask for what is missing."""
        asm = self.assemblies[sha]
        try:
            while sha in self.assemblies:
                await self.connected.wait()
                client = self._client
                if client is None:
                    continue
                if asm.requests == 0:
                    await client.subscribe(topics.content_chunks_filter(sha), qos=1)
                if asm.requests >= self.cfg.content_max_requests:
                    self._content_failed(sha, "content incomplete after retries")
                    return
                missing = asm.missing()
                req = ContentRequest(
                    v=1, kind="content_request", cluster_id=self.id, seq=self._next_seq(),
                    ts=self.now(), sha256=sha,
                    missing=None if len(missing) == asm.manifest.chunks else missing[:4096],
                )
                asm.requests += 1
                self._send(topics.cluster_event(self.id), dumps(req))
                before = len(asm.parts)
                await asyncio.sleep(self.cfg.content_retry_s)
                if len(asm.parts) > before:
                    asm.requests = max(1, asm.requests - 1)  # progress: not a failed attempt
        except aiomqtt.MqttError:
            pass

    def _on_chunk(self, sha: str, index: int, data: bytes) -> None:
        asm = self.assemblies.get(sha)
        if asm is None:
            return
        asm.add(index, data)
        if not asm.complete():
            return
        blob = asm.verified()
        if blob is None:
            asm.parts.clear()  # corrupt: start over; _fetch re-requests everything
            log.warning("%s: content %s failed its sha256 check", self.id, sha[:12])
            return
        del self.assemblies[sha]
        self.cached.add(sha)
        self.store.put(sha, blob)
        for occ in self.waiting.pop(sha, []):
            occ.content = blob
            occ.content_ready.set()
        if self._client is not None:
            asyncio.get_running_loop().create_task(self._unsubscribe(sha))

    async def _unsubscribe(self, sha: str) -> None:
        try:
            if self._client is not None:
                await self._client.unsubscribe(topics.content_chunks_filter(sha))
        except aiomqtt.MqttError:
            pass

    def _content_failed(self, sha: str, reason: str) -> None:
        self.assemblies.pop(sha, None)
        for occ in self.waiting.pop(sha, []):
            occ.failure = reason
            occ.content_ready.set()  # wakes the occurrence, which fails: content is None
