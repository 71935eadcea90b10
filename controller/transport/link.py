"""The one interface between the controller and its message broker.

The controller publishes commands and content, and takes what clusters report from an
:class:`Inbox`. Everything above this module sees only :class:`Link`; its implementations
are the MQTT link (:mod:`controller.transport.mqtt`) and an in-memory one for tests
(:mod:`controller.transport.memory`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from controller.transport.retained import RetainedMirror

__all__ = ["Inbound", "Inbox", "Link", "LinkBase", "Outbound", "topic_matches"]

log = logging.getLogger(__name__)


class Inbound(NamedTuple):
    """A message from the broker, as the ingest thread takes it. ``token`` is set on a QoS 1
    message: it is acknowledged to the broker (:meth:`Link.ack`) only once its effects are
    committed, so a message the controller never committed (a crash, a database that is
    down) is delivered again from its broker session."""

    topic: str
    payload: bytes
    #: (connection number, packet id) of a QoS 1 message; None for QoS 0
    token: tuple[int, int] | None = None


class Outbound(NamedTuple):
    """A message for the broker."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Link(Protocol):
    """What the controller needs of a broker connection.

    ``publish`` never blocks on the network for long and returns False only when the message
    could not even be queued. ``ack`` acknowledges QoS 1 messages taken from the inbox once
    their effects are committed (acknowledgements for a connection that has since dropped
    are discarded: the broker's session delivers those messages again). ``subscribe`` adds topic filters that hold for every
    connection, present and future. Hooks added with ``on_connect`` run after each
    (re)connection, once the subscriptions and the announcement are on the wire."""

    inbox: Inbox
    counters: Counter[str]
    connected: threading.Event
    fast: Callable[[str, bytes, int], bool] | None
    early: Callable[[str, bytes], None] | None

    def subscribe(self, filters: list[tuple[str, int]]) -> None: ...

    def on_connect(self, hook: Callable[[], None]) -> None: ...

    def start(self, wait_s: float = 10.0) -> None: ...

    def stop(self) -> None: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool: ...

    def ack(self, msgs: list[Inbound]) -> None: ...

    def wait_written(self, timeout: float) -> bool: ...


class LinkBase:
    """What every broker link keeps alike: its inbox and counters, the subscriptions that
    hold for every connection, the hooks run once a connection is up."""

    def __init__(self, host: str, port: int, inbox_max: int,
                 more: list[tuple[str, int]] | None = None):
        self.host, self.port = host, port
        #: every node of the broker cluster, this one first: a link that cannot reach or
        #: loses its node tries the next (they must be nodes of one cluster: two separate
        #: brokers would split the controller from the boards on the other)
        self.nodes = [(host, port), *(more or [])]
        self._node = 0  # (the index of host, port in nodes)
        self.inbox = Inbox(inbox_max)
        self.counters: Counter[str] = Counter()
        self.connected = threading.Event()
        self._subscriptions: list[tuple[str, int]] = []
        self._hooks: list[Callable[[], None]] = []
        #: answers a QoS 0 message in the network thread, before the inbox: (topic, payload,
        #: arrival in µs since the epoch) -> True when it took the message. Clock requests
        #: (protocol §4.5) are answered here: their stamps must not wait behind a batch.
        self.fast: Callable[[str, bytes, int], bool] | None = None
        #: sees every other message in the network thread as it arrives, and leaves it
        #: for the inbox: content requests are served from here (they need no database,
        #: and a board must not wait behind batches of reports for the audio it plays)
        self.early: Callable[[str, bytes], None] | None = None
        #: for a broker cluster whose retained messages stay on their node: every retained
        #: message also goes through every node (controller/transport/retained.py)
        self.retained_mirror: RetainedMirror | None = None

    def _mirror(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain and self.retained_mirror is not None:
            self.retained_mirror.publish(topic, payload, qos)

    def on_connect(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def _next_node(self) -> None:
        """The connection to this node failed or dropped: the next one is tried."""
        if len(self.nodes) < 2:
            return
        self._node = (self._node + 1) % len(self.nodes)
        self.host, self.port = self.nodes[self._node]
        log.warning("MQTT: trying broker node %s:%s next", self.host, self.port)

    def _wait_connected(self, wait_s: float) -> None:
        if not self.connected.wait(wait_s):
            log.warning("MQTT broker %s:%s not reachable yet; retrying in the background",
                        self.host, self.port)

    def _connected_now(self, how: str) -> None:
        """The connection is up and subscribed: say so, then run the hooks."""
        self.connected.set()
        log.info("MQTT connected to %s:%s (%s)", self.host, self.port, how)
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                log.exception("on_connect hook failed")


class Inbox:
    """What the network thread hands the ingest thread: a bounded FIFO that the ingest
    thread takes in batches. ``queue.Queue`` takes a lock and signals a condition per
    message on both sides; here a put is a deque append (atomic under the GIL) and the
    waiting side is woken only when it may be asleep."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._q: deque[Inbound] = deque()
        self._ready = threading.Event()
        #: when what is waiting arrived: (messages ever put once this one was, its arrival
        #: on the wall clock), one per put; and how many were ever put and taken
        self._stamps: deque[tuple[int, float]] = deque()
        self._put = 0
        self._taken = 0

    def _stamp(self, n: int) -> None:
        """Before ``n`` messages are appended (so that a stamp is never younger than what
        it covers: the oldest arrival may be read a little early, never late)."""
        self._put += n
        self._stamps.append((self._put, time.time()))

    def oldest_arrival(self) -> float | None:
        """When the oldest message still waiting arrived (seconds since the epoch), None
        when none waits. Everything that arrived before it has been taken: a cluster
        whose last message is older than that has been silent for real, whereas one whose
        heartbeat waits behind a backlog has not (HealthTracker.sweep)."""
        stamps = self._stamps
        try:
            return stamps[0][1] if self._q else None
        except IndexError:
            return None

    def put(self, item: Inbound) -> bool:
        """False when full (the caller counts the drop); never for a message that waits for
        its acknowledgement (see :meth:`put_many`)."""
        if len(self._q) >= self.maxsize and item.token is None:
            return False
        self._stamp(1)
        self._q.append(item)
        if not self._ready.is_set():
            self._ready.set()
        return True

    def put_many(self, items: list[Inbound]) -> int:
        """Appends what fits; returns how many did not (the caller counts the drops). A
        message that waits for its acknowledgement (``token``) is never dropped: the
        broker's receive maximum bounds how many of those there are, and one dropped
        unacknowledged would hold its place in the broker's window until a reconnect."""
        room = max(self.maxsize - len(self._q), 0)
        if room < len(items):
            kept = [m for i, m in enumerate(items) if i < room or m.token is not None]
            self._stamp(len(kept))
            self._q.extend(kept)
            dropped = len(items) - len(kept)
        else:
            self._stamp(len(items))
            self._q.extend(items)
            dropped = 0
        if not self._ready.is_set():
            self._ready.set()
        return dropped

    def take(self, max_items: int, timeout: float) -> list[Inbound]:
        """Up to ``max_items`` in arrival order; waits up to ``timeout`` for the first."""
        if not self._q:
            self._ready.clear()
            if not self._q:  # re-checked after clear: a put in between is not missed
                self._ready.wait(timeout)
        q, out = self._q, []
        for _ in range(min(max_items, len(q))):
            out.append(q.popleft())
        self._taken += len(out)
        stamps = self._stamps
        while stamps and stamps[0][0] <= self._taken:
            stamps.popleft()
        return out

    def qsize(self) -> int:
        return len(self._q)


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic-filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)
