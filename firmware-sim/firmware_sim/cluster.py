"""One simulated cluster: an MQTT client that behaves like the smart-radio board.

Connects with its own client id and a Last Will (retained ``offline`` with its bd_seq),
publishes a retained birth, subscribes to its own and its ancestors' command topics,
verifies every command (Ed25519, topic, expiry, replay), fetches content in chunks and checks
its sha256, plays at the commanded time by its own clock, reports every step, carries out
remote actions, and misbehaves on demand (``faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey

from devices import topics
from devices.areas import Cluster
from devices.clock import REPLY_TIMEOUT_S, ClockError, ClockFilter, parse_reply, request_payload
from devices.messages import (
    AckEvent,
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
    Priority,
    RefusalReason,
    RefusedEvent,
    SetHeartbeatBody,
    SetSpeakerBody,
    SetVolumeBody,
    SpeakerReport,
    SpeakerState,
    SpeakerTest,
    Telemetry,
    dumps,
)
from devices.signing import CommandVerifier, Refused, key_id
from devices.stream import StreamError, stream_topic, unpack_batch
from firmware_sim import mqtt
from firmware_sim.content import Assembly, SharedStore
from firmware_sim.faults import Physics
from firmware_sim.memory import BoardMemory
from firmware_sim.mqtt import MqttError, NoConnack, ProtocolUnsupported
from firmware_sim.outbox import Outbox
from firmware_sim.player import Occurrence, Player
from firmware_sim.stream import StreamTap

log = logging.getLogger(__name__)

__all__ = ["SimCluster", "SimConfig"]

FIRMWARE = "loa-sim/0.2.0"
SELF_TEST_S = 2.0
#: an emergency due this soon after it arrives skips the `received`/`ready` reports
IMMEDIATE = timedelta(seconds=1)
TICK_S = 0.25
IDLE_TICK_S = 1.0
#: how long an emergency's fetch waits for its pushed chunks before it subscribes or asks
PUSH_GRACE_S = 0.5
#: a clean shutdown's longest wait (its offline status, on a link that may be stuck)
STOP_S = 3.0


@dataclass(slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    #: more nodes of a clustered broker: a board that cannot reach one tries the next
    more_brokers: list[tuple[str, int]] = field(default_factory=list)
    keys: list[VerifyKey] = field(default_factory=list)
    heartbeat_s: float = 30.0
    record_dir: Path | None = None
    #: where each board keeps what must survive a reboot (its outbox); None: in memory
    state_dir: Path | None = None
    #: the broker password of a board without one of its own (``passwords``)
    password: str | None = None
    #: each board's own broker password, from its provisioning bundle
    passwords: dict[str, str] = field(default_factory=dict)
    #: mqtts: the context that checks the broker's certificate (the bundle's CA)
    tls: ssl.SSLContext | None = None
    content_retry_s: float = 2.0
    content_max_requests: int = 8
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    seed: int = 0
    #: "5", "3.1.1" or "auto" (MQTT 5 first, 3.1.1 if the broker refuses it, e.g. amqtt)
    protocol: str = "auto"
    #: the signature and schema checks of each distinct command payload, done once for all
    #: the clusters simulated with these keys (an area's command reaches hundreds of them
    #: in one process; real boards each check it in parallel). Per-cluster checks (topic,
    #: clock, replay) are not shared.
    verify_memo: dict[bytes, Any] = field(default_factory=dict, repr=False)
    #: clock synchronisation with the controller (protocol §4.5): an exchange this often,
    #: after a burst of ``clock_burst`` at each connect; 0 turns it off (the board then
    #: plays by its own oscillator, however far it has run)
    clock_sync_s: float = 30.0
    clock_burst: int = 6


class SimCluster:
    def __init__(self, cluster: Cluster, area_path: list[str], cfg: SimConfig,
                 store: SharedStore | None = None):
        self.cluster = cluster
        self.id = cluster.id
        self.area_path = area_path
        #: the command topics this cluster subscribes to (its own and its areas')
        self._cmd_topics = {topics.cluster_cmd(cluster.id)} | {topics.area_cmd(a) for a in area_path}
        self.cfg = cfg
        self.heartbeat_s = cfg.heartbeat_s
        self.store = store or SharedStore()
        self.rng = random.Random(f"{cfg.seed}:{cluster.id}")
        self.physics = Physics(self.rng, rssi_dbm=-70.0 - self.rng.randint(0, 15))
        #: the controller's clock as this board estimates it (protocol §4.5)
        self.clock = ClockFilter()
        self._clock_keys = {key_id(k): k for k in cfg.keys}
        self._time_pending: dict[int, int] = {}  # seq -> t1 of requests not yet answered
        self._time_seq = 0
        self.time_replies_ignored = 0  # forged, replayed, late
        #: streams being played: stream id -> (its tap, its occurrence, topics subscribed)
        self.taps: dict[str, tuple[StreamTap, Occurrence, list[str]]] = {}
        self.stream_batches_dropped = 0  # malformed, unsigned, for no stream we play
        #: the replay window and held cancels: on disk with a state folder, so that a
        #: reboot forgets neither (protocol §5.2)
        self.memory = BoardMemory(cfg.state_dir / cluster.id if cfg.state_dir else None,
                                  self.now())
        self.verifier = CommandVerifier(cfg.keys, replay_guard=self.memory.guard,
                                        memo=cfg.verify_memo)
        self.cached: set[str] = set()
        self.assemblies: dict[str, Assembly] = {}
        self._content_subs: set[str] = set()  # content topics subscribed to (to undo)
        self.waiting: dict[str, list[Occurrence]] = {}
        self.player = Player(self.now, self._report_delivery, self._record)
        self.bd_seq = 0
        self.seq = 0
        self.volume_pct = 80
        self.speaker_faults = {s.index: SpeakerState.OK for s in cluster.speakers}
        self.muted: set[int] = set()
        self.boot = time.monotonic()
        self.connected = asyncio.Event()
        self.refusals: list[RefusedEvent] = []
        self.acks: list[AckEvent] = []
        self.commands_in = 0  # commands received (accepted or refused)
        #: cancels for occurrences not (yet) held: occurrence id -> cancel's expiry
        self.cancelled_unknown: dict[str, datetime] = self.memory.cancels
        self._client: mqtt.Session | None = None
        self._outbox = Outbox(cfg.state_dir / self.id if cfg.state_dir else None)
        self._outbox_ready = asyncio.Event()
        self._controller_ts: datetime | None = None
        #: the controller's retained status says online, on this connection: events are
        #: published only then (protocol §3), so none is lost to a broker that restarted
        #: empty and holds no subscription of the controller's yet
        self.controller_online = asyncio.Event()
        self._wake_heartbeat = asyncio.Event()
        self._v5 = cfg.protocol in ("5", "auto")
        self._v5_silences = 0  # MQTT 5 CONNECTs in a row that got no answer
        self._client_entered = False  # the last connection was established
        self._chunk_lane: asyncio.Lock = asyncio.Lock()
        self._handlers: dict[str, Callable[[Command], object]] = {
            "play": self._on_play,
            "cancel": self._on_cancel,
            "rebirth": self._on_rebirth,
            "set_volume": self._on_set_volume,
            "set_speaker": self._on_set_speaker,
            "reboot": self._on_reboot,
            "self_test": self._on_self_test,
            "report_now": self._on_report_now,
            "set_heartbeat": self._on_set_heartbeat,
        }

    # --- clock --------------------------------------------------------------------------

    def raw_us(self) -> int:
        """The board's own oscillator, in µs since the epoch (off by its physics)."""
        return time.time_ns() // 1000 + round(self.physics.clock_offset_ms * 1000)

    def now(self) -> datetime:
        """The board's disciplined clock: its oscillator corrected by what it learned from
        the controller's time replies. Commands, playback and reports all use this one."""
        raw = self.raw_us()
        return datetime.fromtimestamp((raw + self.clock.correction_us(raw)) / 1e6, UTC)

    def clock_error_ms(self) -> float:
        """How far the disciplined clock is from true time (what a board would measure
        against NTP; the simulator knows it exactly)."""
        raw = self.raw_us()
        return (raw + self.clock.correction_us(raw) - time.time_ns() / 1000) / 1000

    async def _clock_sync(self) -> None:
        """A burst of exchanges after each connect (its start jittered: a fleet connecting
        together does not ask together); while no exchange has been quick enough to bound
        the error by 2 ms (a connect storm delays the first ones), again after 2, 4, 8 s…;
        then one every ``clock_sync_s``."""
        await self.controller_online.wait()
        await asyncio.sleep(self.rng.random())
        n, retry = 0, 2.0
        while True:
            self._time_seq += 1
            self._time_pending[self._time_seq] = t1 = self.raw_us()
            for seq in [q for q, t in self._time_pending.items()
                        if t1 - t > REPLY_TIMEOUT_S * 1e6]:
                del self._time_pending[seq]
            assert self._client is not None
            await self._client.publish(topics.cluster_time(self.id),
                                       request_payload(self._time_seq, t1), qos=0)
            n += 1
            acc = self.clock.accuracy_us
            if n < self.cfg.clock_burst:
                pause = 0.2 * (0.5 + self.rng.random())
            elif (acc is None or acc > 2000) and retry < self.cfg.clock_sync_s:
                pause, retry = retry * (0.8 + 0.4 * self.rng.random()), retry * 2
            else:
                pause = self.cfg.clock_sync_s * (0.8 + 0.4 * self.rng.random())
            await asyncio.sleep(pause)

    def _on_time_reply(self, payload: bytes, arrived_ns: int = 0) -> None:
        t4 = (arrived_ns // 1000 + round(self.physics.clock_offset_ms * 1000) if arrived_ns
              else self.raw_us())
        try:
            seq, t1, t2, t3 = parse_reply(payload, self._clock_keys)
        except ClockError as exc:
            log.info("%s: time reply ignored: %s", self.id, exc)
            self.time_replies_ignored += 1
            return
        if self._time_pending.get(seq) != t1:  # answers nothing we asked: a replay, a forgery
            log.info("%s: time reply for no outstanding request (seq %s)", self.id, seq)
            self.time_replies_ignored += 1
            return
        del self._time_pending[seq]
        self.clock.add(t1, t2, t3, t4)

    # --- faults -------------------------------------------------------------------------

    def inject(self, fault: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        merged = self.physics.inject(fault, params)
        if fault == "blown_speaker":
            idx = int(merged["index"])
            if idx not in self.speaker_faults:
                self.physics.clear(fault)
                raise ValueError(f"{self.id} has no speaker {idx}")
            if merged["mode"] not in ("open", "short"):
                self.physics.clear(fault)
                raise ValueError("mode must be open or short")
            self.speaker_faults[idx] = SpeakerState(merged["mode"])
        if not self.physics.link_up:
            self._drop_link()
        log.info("%s: fault %s injected %s", self.id, fault, merged)
        return merged

    def clear(self, fault: str) -> None:
        if fault == "blown_speaker":
            self.speaker_faults = {i: SpeakerState.OK for i in self.speaker_faults}
        self.physics.clear(fault)
        log.info("%s: fault %s cleared", self.id, fault)

    def _drop_link(self) -> None:
        """Lose the link as a power cut does: the broker publishes our Will at once (MQTT 5:
        DISCONNECT with reason 0x04, "with Will message"; on 3.1.1 the session publishes
        the same retained death itself, see ``firmware_sim.mqtt``)."""
        if self._client is not None:
            self._client.cut()

    def physics_fast(self) -> bool:
        """A quiet board (no fault, link up, idle) changes slowly: it is ticked once a
        second, not four times, so thousands of simulated clusters cost little CPU."""
        p = self.physics
        return bool(p.faults or self.player.current is not None or p.link_down_for > 0)

    def physics_step(self, dt: float) -> None:
        """Advance the board's physics by ``dt`` seconds and act on what happened."""
        events = self.physics.tick(dt, self.player.current is not None)
        if "reboot" in events:
            self._forget()
            self.boot = time.monotonic()
            self._drop_link()
        elif "drop" in events:
            self._drop_link()

    # --- connection -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stay connected until cancelled, reconnecting with jittered exponential back-off.
        The board's physics is ticked by the runner (``runner.tick_physics``), one task for
        every board in the process."""
        backoff = self.cfg.reconnect_min_s
        brokers = [(self.cfg.host, self.cfg.port), *self.cfg.more_brokers]
        at = 0
        while True:
            while not self.physics.link_up:
                await asyncio.sleep(0.1)
            try:
                await self._session(*brokers[at])
                backoff = self.cfg.reconnect_min_s
            except MqttError as exc:
                log.debug("%s: link down: %s", self.id, exc)
                # a node that would not take us: the next one (a node that dropped us once
                # we were in is tried again first; if it is gone, that try moves on)
                if not self._client_entered:
                    at = (at + 1) % len(brokers)
            finally:
                self.connected.clear()
                self._client = None
            if stop is not None and stop.is_set():
                return
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    async def _session(self, host: str, port: int) -> None:
        """One connection to the broker node at host:port, until it ends
        (``_client_entered``: whether it was established)."""
        self.bd_seq += 1  # seq keeps counting: events queued offline keep their numbers
        will = mqtt.Message(
            topics.cluster_status(self.id),
            dumps(Death(v=1, cluster_id=self.id, state="offline", bd_seq=self.bd_seq)))
        entered = self._client_entered = False
        try:
            async with mqtt.connect(
                    host, port, client_id=f"cluster-{self.id}", will=will,
                    keepalive=max(5, int(self.heartbeat_s)), username=self.id,
                    password=self.cfg.passwords.get(self.id, self.cfg.password),
                    v5=self._v5, tls=self.cfg.tls) as client:
                entered = self._client_entered = True
                self._v5_silences = 0
                await self._run_session(client)
        except ProtocolUnsupported as exc:
            if not entered and self._v5 and self.cfg.protocol == "auto":
                # a 3.1.1-only broker (amqtt): the next attempt speaks 3.1.1. Silence alone
                # may be an overloaded broker: only the third in a row counts as an answer
                self._v5_silences = self._v5_silences + 1 if isinstance(exc, NoConnack) else 3
                if self._v5_silences >= 3:
                    self._v5 = False
            raise

    async def _run_session(self, client: mqtt.Session) -> None:
        self._client = client
        self.controller_online.clear()  # until the status (retained) says so again
        subs = [(topics.cluster_cmd(self.id), 1), (topics.CONTROLLER_STATUS, 1)]
        if self.cfg.clock_sync_s > 0:
            subs.append((topics.cluster_time_reply(self.id), 0))
        subs += [(topics.area_cmd(a), 1) for a in self.area_path]
        subs += [(topics.area_content_filter(a), 1) for a in self.area_path]
        subs += [(topics.content_chunks_filter(s), 1) for s in self.assemblies]
        subs += [(t, 0) for _tap, _occ, ts in self.taps.values() for t in ts]
        self._content_subs.update(self.assemblies)
        await client.subscribe(subs)
        await self._publish_birth()
        self.connected.set()
        tasks = [asyncio.create_task(self._heartbeats()),
                 asyncio.create_task(self._drain_outbox())]
        if self.cfg.clock_sync_s > 0:
            tasks.append(asyncio.create_task(self._clock_sync()))
        try:
            async for msg in client.messages():
                if msg.topic.endswith("/time/reply"):  # stamped when it came off the wire
                    self._on_time_reply(msg.payload, msg.arrived_ns)
                    continue
                await self._dispatch(msg.topic, msg.payload)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish_birth(self) -> None:
        assert self._client is not None
        birth = Birth(
            v=1, cluster_id=self.id, state="online", bd_seq=self.bd_seq, ts=self.now(),
            firmware=FIRMWARE, heartbeat_s=max(1, round(self.heartbeat_s)),
            speakers=self._speaker_reports(), cached=sorted(self.cached)[:1000],
        )
        await self._client.publish(topics.cluster_status(self.id), dumps(birth), qos=1, retain=True)

    async def stop(self) -> None:
        """Clean shutdown: publish offline (retained) ourselves, then disconnect; bounded
        (STOP_S) whatever the link is doing, so a board never holds up its process's exit."""
        try:
            async with asyncio.timeout(STOP_S):
                await self.player.close()
                if self._client is not None:
                    death = Death(v=1, cluster_id=self.id, state="offline", bd_seq=self.bd_seq)
                    await self._client.publish(topics.cluster_status(self.id), dumps(death),
                                               qos=1, retain=True, timeout=2)
        except (MqttError, TimeoutError):
            pass  # the broker publishes our Will instead
        finally:
            self._outbox.close()  # (after the player: what it reported on stopping is kept)
            self.memory.close()

    # --- outgoing ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _send(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue an event for publishing; it survives link loss (sent, in order, after the
        reconnect) and, with a state folder, a reboot."""
        self._outbox.append(topic, payload, qos)
        self._outbox_ready.set()

    async def _drain_outbox(self) -> None:
        """Publish queued events in order while the controller is online. An event leaves
        the queue only once the broker acknowledged it, so a link lost (or a session
        cancelled) mid-publish loses nothing; the controller tolerates the occasional
        duplicate (at-least-once)."""
        while True:
            while not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            await self.controller_online.wait()
            client = self._client
            if client is None:
                return
            topic, payload, qos = self._outbox.first()
            await client.publish(topic, payload, qos)
            self._outbox.pop()

    async def _heartbeats(self) -> None:
        """Heartbeats go straight out (QoS 0, never queued: an old one says nothing)."""
        while True:
            client = self._client
            if client is not None and self.controller_online.is_set():
                try:
                    await client.publish(topics.cluster_telemetry(self.id),
                                         dumps(self.telemetry()), qos=0)
                except MqttError:
                    pass  # the session ends; the next one has its own heartbeats
            self._wake_heartbeat.clear()
            try:
                await asyncio.wait_for(self._wake_heartbeat.wait(), self.heartbeat_s)
            except TimeoutError:
                pass

    def telemetry(self) -> Telemetry:
        p = self.physics
        playing = self.player.current
        return Telemetry(
            v=1, cluster_id=self.id, seq=self._next_seq(), bd_seq=self.bd_seq, ts=self.now(),
            uptime_s=int(time.monotonic() - self.boot), firmware=FIRMWARE,
            link=Link(type="4g", rssi_dbm=max(-150, min(0, round(p.rssi_dbm)))),
            power=Power(source="battery" if p.on_battery else "mains",
                        battery_pct=round(p.battery_pct)),
            amp_temp_c=round(p.amp_temp_c + self.rng.random() * 0.5, 1),
            volume_pct=self.playback_volume(playing),
            storage_free_kb=max(0, 512_000 - 64 * len(self.cached)),
            clock_offset_ms=round(self.clock_error_ms()),
            playing=playing.id if playing else None, speakers=self._speaker_reports(),
        )

    def playback_volume(self, occ: Occurrence | None) -> int:
        """An item may carry its own volume (an emergency raised to the set level) and a
        cap (the area's quiet-time limit); the cap wins."""
        if occ is None:
            return self.volume_pct
        vol = occ.body.volume_pct if occ.body.volume_pct is not None else self.volume_pct
        if occ.body.max_volume_pct is not None:
            vol = min(vol, occ.body.max_volume_pct)
        return vol

    def speaker_state(self, index: int) -> SpeakerState:
        fault = self.speaker_faults[index]
        if fault is not SpeakerState.OK:
            return fault
        return SpeakerState.MUTED if index in self.muted else SpeakerState.OK

    def _speaker_reports(self) -> list[SpeakerReport]:
        return [SpeakerReport(index=i, state=self.speaker_state(i)) for i in sorted(self.speaker_faults)]

    async def _report_delivery(self, occ: Occurrence, state: DeliveryState, at: datetime,
                               reason: str | None) -> None:
        self._emit_delivery(occ, state, at, reason)

    def _emit_delivery(self, occ: Occurrence, state: DeliveryState, at: datetime,
                       reason: str | None) -> None:
        if state in (DeliveryState.RECEIVED, DeliveryState.READY) and \
                occ.body.priority is Priority.EMERGENCY and \
                occ.body.start_at <= occ.received_at + IMMEDIATE:
            return  # an emergency that starts at once: `playing` (or a failure) says it all
        stats = None
        if occ.body.stream is not None and state in (
                DeliveryState.PLAYED, DeliveryState.CANCELLED, DeliveryState.FAILED):
            stats = self._leave_stream(occ)
        ev = DeliveryEvent(
            v=1, kind="delivery", cluster_id=self.id, seq=self._next_seq(), ts=self.now(),
            command_id=occ.command_id, occurrence_id=occ.id, state=state, at=at, reason=reason,
            revision=occ.body.revision, stream=stats,
        )
        self._send(topics.cluster_event(self.id), dumps(ev))

    def _ack(self, cmd: Command, status: str, result: dict[str, Any] | None = None,
             reason: str | None = None) -> None:
        ev = AckEvent(v=1, kind="ack", cluster_id=self.id, seq=self._next_seq(), ts=self.now(),
                      command_id=cmd.id, action=cmd.kind, status=status,  # type: ignore[arg-type]
                      result=result, reason=reason)
        self.acks.append(ev)
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
        """With ``record_dir``: what this board played, one line per airing in
        ``plays.jsonl`` (repeats too), the content itself, and for a stream the figures (its
        batches and packets are written as they are heard, by the tap)."""
        if self.cfg.record_dir is None or (occ.content is None and occ.body.content is not None):
            return
        folder = self.cfg.record_dir / self.id
        folder.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {
            "occurrence_id": occ.id, "broadcast_id": occ.body.broadcast_id,
            "started_at": started.isoformat(), "finished_at": finished.isoformat(),
            "heard_at": occ.heard_at.isoformat() if occ.heard_at else None,
            "volume_pct": self.playback_volume(occ), "revision": occ.body.revision,
        }
        if occ.body.content is not None and occ.content is not None:
            (folder / f"{occ.id}.{occ.body.content.container}").write_bytes(occ.content)
            entry["sha256"] = occ.body.content.sha256
        elif occ.body.line is not None:  # it played its own input (the simulator: a tone)
            entry["line"] = occ.body.line.model_dump()
        elif occ.body.stream is not None:
            tap = self.taps.get(occ.body.stream.stream_id)
            entry["stream_id"] = occ.body.stream.stream_id
            if tap is not None:
                entry["stream"] = tap[0].stats().model_dump()
        line = json.dumps(entry)
        (folder / f"{occ.id}.json").write_text(line)
        with (folder / "plays.jsonl").open("a") as f:  # one line per airing, repeats too
            f.write(line + "\n")

    # --- incoming ------------------------------------------------------------------------

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        if "/stream/" in topic:
            self._on_stream_batch(topic, payload)
            return
        content = topics.parse_content_topic(topic)
        if content is not None:
            delay = self.physics.chunk_delay_s(len(payload))
            if delay:  # a bandwidth-capped link: chunks arrive one after another, slowly
                async with self._chunk_lane:
                    await asyncio.sleep(delay)
            self._on_chunk(content[0], content[1], payload)
        elif topic == topics.CONTROLLER_STATUS:
            self._on_controller_status(payload)
        else:
            self._on_command(topic, payload)

    def _on_command(self, topic: str, payload: bytes) -> None:
        if topic not in self._cmd_topics:
            # not a topic we subscribed to (a broker bug, e.g. amqtt handing out retained
            # messages to non-matching subscriptions): not addressed to us, not a refusal
            log.debug("%s: dropped a message on %s (not subscribed)", self.id, topic)
            return
        self.commands_in += 1
        try:
            cmd = self.verifier.verify(payload, topic, self.now())
            if self.memory.issued_before_boot(cmd.issued_at):
                raise Refused(RefusalReason.REPLAYED, "issued before this board started, and "
                              "it keeps no replay window across a reboot", cmd.id)
        except Refused as exc:
            self._refuse(topic, exc)
            return
        self.memory.accepted(cmd.id, cmd.expires_at)
        log.debug("%s: %s command %s on %s", self.id, cmd.kind, cmd.id, topic)
        self._handlers[cmd.kind](cmd)

    def _on_controller_status(self, payload: bytes) -> None:
        if not payload:  # the retained status cleared
            self.controller_online.clear()
            return
        try:
            status = ControllerStatus.model_validate_json(payload)
        except ValueError:
            return
        if status.state != "online":
            self.controller_online.clear()  # events wait on the board until it is back
            return
        self.controller_online.set()
        # a restarted controller announces itself: re-send our birth so it rebuilds its view
        if self._controller_ts is not None and status.ts != self._controller_ts:
            asyncio.get_running_loop().create_task(self._rebirth())
        self._controller_ts = status.ts

    async def _rebirth(self) -> None:
        try:
            await self._publish_birth()
            self._wake_heartbeat.set()
        except MqttError:
            pass

    def _on_rebirth(self, _cmd: Command) -> None:
        asyncio.get_running_loop().create_task(self._rebirth())

    # --- remote actions --------------------------------------------------------------------

    def _on_set_volume(self, cmd: Command) -> None:
        body = cmd.parsed_body()
        assert isinstance(body, SetVolumeBody)
        self._ack(cmd, "accepted")
        self.volume_pct = body.volume_pct
        self._ack(cmd, "done", {"volume_pct": self.volume_pct})
        self._wake_heartbeat.set()

    def _on_set_speaker(self, cmd: Command) -> None:
        body = cmd.parsed_body()
        assert isinstance(body, SetSpeakerBody)
        if body.index not in self.speaker_faults:
            self._ack(cmd, "failed", reason=f"no speaker {body.index}")
            return
        self._ack(cmd, "accepted")
        (self.muted.add if body.muted else self.muted.discard)(body.index)
        self._ack(cmd, "done", {"index": body.index,
                                "state": self.speaker_state(body.index).value})
        self._wake_heartbeat.set()

    def _on_report_now(self, cmd: Command) -> None:
        self._ack(cmd, "accepted")
        self._wake_heartbeat.set()
        self._ack(cmd, "done")

    def _on_set_heartbeat(self, cmd: Command) -> None:
        body = cmd.parsed_body()
        assert isinstance(body, SetHeartbeatBody)
        self._ack(cmd, "accepted")
        self.heartbeat_s = float(body.heartbeat_s)
        asyncio.get_running_loop().create_task(self._rebirth())  # birth carries heartbeat_s
        self._ack(cmd, "done", {"heartbeat_s": body.heartbeat_s})

    def _on_reboot(self, cmd: Command) -> None:
        self._ack(cmd, "accepted")

        async def reboot() -> None:
            await asyncio.sleep(0.2)  # let the ack leave
            self._forget()
            self.boot = time.monotonic()
            self.physics.link_down_for = 2.0  # boot time
            self._drop_link()
            self._ack(cmd, "done", {"rebooted": True})  # queued; sent after the new birth

        asyncio.get_running_loop().create_task(reboot())

    def _forget(self) -> None:
        """What a reboot does to RAM: the replay window and held cancels are what the
        board's storage kept (nothing, without a state folder: it then refuses commands
        issued before this new boot)."""
        self.memory.close()
        self.memory = BoardMemory(self.cfg.state_dir / self.id if self.cfg.state_dir else None,
                                  self.now())
        self.verifier = CommandVerifier(self.cfg.keys, replay_guard=self.memory.guard,
                                        memo=self.cfg.verify_memo)
        self.cancelled_unknown = self.memory.cancels
        self.clock = ClockFilter()  # (RAM: learned again from the controller after boot)
        self._time_pending.clear()

    def _on_self_test(self, cmd: Command) -> None:
        if self.player.current is not None:
            self._ack(cmd, "failed", reason=f"busy: playing {self.player.current.id}")
            return
        self._ack(cmd, "accepted")

        async def test() -> None:
            await asyncio.sleep(SELF_TEST_S)  # the test tone plays on every line
            lines = []
            for i in sorted(self.speaker_faults):
                state = self.speaker_faults[i]
                if state is SpeakerState.OPEN:
                    lines.append(SpeakerTest(index=i, state=state, impedance_ohm=None, level_db=0))
                elif state is SpeakerState.SHORT:
                    lines.append(SpeakerTest(index=i, state=state, impedance_ohm=0.3, level_db=0))
                else:
                    lines.append(SpeakerTest(
                        index=i, state=SpeakerState.OK,
                        impedance_ohm=round(8 + self.rng.uniform(-0.4, 0.4), 2),
                        level_db=round(96 + self.rng.uniform(-1.5, 1.5), 1)))
            faulty = [t.index for t in lines if t.state is not SpeakerState.OK]
            self._ack(cmd, "done", {"speakers": [t.model_dump(mode="json") for t in lines],
                                    "faulty": faulty})

        asyncio.get_running_loop().create_task(test())

    # --- broadcasts -------------------------------------------------------------------------

    def _on_cancel(self, cmd: Command) -> None:
        body = cmd.parsed_body()
        assert isinstance(body, CancelBody)
        if self.player.cancel(body.occurrence_id) is None:
            # not here yet: the play may still be on its way (or was lost); remember, even
            # across a reboot, so a late play for it is dropped and reported cancelled
            self.memory.cancel(body.occurrence_id, cmd.expires_at)

    def _on_play(self, cmd: Command) -> None:
        body = cmd.parsed_body()
        assert isinstance(body, PlayBody)
        known = self.player.occurrences.get(body.occurrence_id)
        if known is not None and body.revision > known.body.revision and \
                known.state in (DeliveryState.RECEIVED, DeliveryState.READY):
            self.player.replace(body.occurrence_id)  # an update before it started
            known = None
        if known is not None:
            # the controller re-sent it (after its restart or our reconnect): say where we are
            self._emit_delivery(known, known.state, self.now(), known.failure)
            return
        occ = Occurrence(body=body, command_id=cmd.id, expires_at=cmd.expires_at,
                         received_at=self.now())
        if self.cancelled_unknown.pop(body.occurrence_id, None) is not None:
            occ.state = DeliveryState.CANCELLED  # its cancel overtook it
            self.player.occurrences[occ.id] = occ
            self._emit_delivery(occ, DeliveryState.CANCELLED, self.now(), None)
            return
        self._emit_delivery(occ, DeliveryState.RECEIVED, self.now(), None)
        self.player.schedule(occ)
        if body.stream is not None:
            self._join_stream(occ)
            return
        if body.line is not None:  # its own input: nothing to fetch (a test signal here)
            occ.content_ready.set()
            return
        assert body.content is not None
        sha = body.content.sha256
        data = self.store.get(sha) if sha in self.cached else None
        if data is not None:
            occ.content = data
            occ.content_ready.set()
            return
        self.waiting.setdefault(sha, []).append(occ)
        if sha not in self.assemblies:
            self.assemblies[sha] = Assembly(body.content)
            pushed = body.priority is Priority.EMERGENCY
            asyncio.get_running_loop().create_task(self._fetch(sha, pushed))

    # --- streams (protocol §6.1) -----------------------------------------------------------

    def _controller_us(self) -> int:
        raw = self.raw_us()
        return round(raw + self.clock.correction_us(raw))

    def _join_stream(self, occ: Occurrence) -> None:
        """Subscribe to the stream's topics that are ours and play it as it comes."""
        spec = occ.body.stream
        assert spec is not None
        mine = {stream_topic(a, spec.stream_id) for a in self.area_path} | \
            {stream_topic(self.id, spec.stream_id, cluster=True)}
        wanted = [t for t in spec.topics if t in mine]
        occ.content_ready.set()
        record = (self.cfg.record_dir / self.id / occ.id) if self.cfg.record_dir else None
        tap = StreamTap(spec, int(occ.body.start_at.timestamp() * 1e6), self._controller_us,
                        lambda: self.player.current is occ and occ.state is DeliveryState.PLAYING,
                        lambda: self._stream_ended(occ), record)
        self.taps[spec.stream_id] = (tap, occ, wanted)
        tap.start()
        if self._client is not None and wanted:
            client = self._client

            async def sub() -> None:
                with contextlib.suppress(MqttError):
                    await client.subscribe([(t, 0) for t in wanted])
            asyncio.get_running_loop().create_task(sub())

    def _stream_ended(self, occ: Occurrence) -> None:
        occ.finished_early = True
        occ.preempt.set()  # wakes the player: the item is over

    def _leave_stream(self, occ: Occurrence) -> Any:
        spec = occ.body.stream
        assert spec is not None
        entry = self.taps.pop(spec.stream_id, None)
        if entry is None:
            return None
        tap, _occ, wanted = entry
        tap.stop()
        if self._client is not None:
            client = self._client

            async def unsub() -> None:
                for t in wanted:
                    with contextlib.suppress(MqttError):
                        await client.unsubscribe(t)
            asyncio.get_running_loop().create_task(unsub())
        return tap.stats()

    def _on_stream_batch(self, topic: str, payload: bytes) -> None:
        sid = topic.rsplit("/", 1)[-1]
        entry = self.taps.get(sid)
        if entry is None or topic not in entry[2]:
            self.stream_batches_dropped += 1
            return
        # one signature check per distinct batch for every board of this process (an
        # area's batch reaches hundreds of them; real boards each check it in parallel)
        memo = self.cfg.verify_memo
        known = memo.get(payload) is True
        try:
            batch = unpack_batch(payload, self.cfg.keys, verified=known)
        except StreamError as exc:
            log.info("%s: stream batch dropped: %s", self.id, exc)
            self.stream_batches_dropped += 1
            return
        if not known:
            if len(memo) > 4096:
                memo.clear()
            memo[payload] = True
        if batch.stream_id != sid:
            self.stream_batches_dropped += 1
            return
        entry[0].add(batch)

    async def _fetch(self, sha: str, pushed: bool = False) -> None:
        """Subscribe to the content's chunks, ask for them, re-ask for what is missing.

        An emergency's chunks are pushed (protocol §6): right after the command on the
        content topic of the area it was sent to, which this cluster is subscribed to
        already, and retained on the content topic. So an emergency first waits
        PUSH_GRACE_S for the push; only what has not come by then is fetched, and the
        request asks only for what is missing, sparing the controller a request from
        every cluster at once."""
        asm = self.assemblies.get(sha)
        if asm is None:
            return  # the pushed chunks completed it before this task first ran
        subscribed_bd = -1
        if pushed:
            await asyncio.sleep(PUSH_GRACE_S)
            await self._read_backlog(sha)
            if sha not in self.assemblies:
                return  # it all came with the push
        try:
            while sha in self.assemblies:
                await self.connected.wait()
                client = self._client
                if client is None:
                    continue
                if subscribed_bd != self.bd_seq:  # (re)subscribe on each connection
                    self._content_subs.add(sha)
                    await client.subscribe([(topics.content_chunks_filter(sha), 1)])
                    subscribed_bd = self.bd_seq
                    if pushed:  # retained chunks come with the subscription: let them
                        pushed = False
                        await asyncio.sleep(PUSH_GRACE_S)
                        await self._read_backlog(sha)
                        if sha not in self.assemblies:
                            return
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
        except MqttError:
            pass

    async def _read_backlog(self, sha: str) -> None:
        """Wait until this board has read what its link has delivered (at most 10 s).

        A real board reads its own messages within milliseconds, so a grace period measured
        on its clock is a grace period for the network. Hundreds of simulated boards share
        one event loop, which may be seconds behind in reading during a province-wide
        fan-out: chunks already received but not yet read are not missing, and asking for
        them again would only add a storm of requests to that backlog."""
        deadline = time.monotonic() + 10.0
        while sha in self.assemblies and time.monotonic() < deadline:
            client = self._client
            if client is None or client.unread() == 0:
                await asyncio.sleep(0)  # one more turn: what the socket holds is read
                if client is None or client.unread() == 0:
                    return
            await asyncio.sleep(0.05)

    def _on_chunk(self, sha: str, index: int, data: bytes) -> None:
        asm = self.assemblies.get(sha)
        if asm is None or not data:  # empty: the controller clearing retained chunks
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
        if self._client is not None and sha in self._content_subs:
            asyncio.get_running_loop().create_task(self._unsubscribe(sha))

    async def _unsubscribe(self, sha: str) -> None:
        self._content_subs.discard(sha)
        try:
            if self._client is not None:
                await self._client.unsubscribe(topics.content_chunks_filter(sha))
        except MqttError:
            pass

    def _content_failed(self, sha: str, reason: str) -> None:
        self.assemblies.pop(sha, None)
        for occ in self.waiting.pop(sha, []):
            occ.failure = reason
            occ.content_ready.set()  # wakes the occurrence, which fails: content is None
