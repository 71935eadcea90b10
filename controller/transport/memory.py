"""An in-memory :class:`~controller.transport.link.Link` for tests: what the controller
publishes is recorded, and a test hands it messages as clusters would send them. No
broker, no thread, no network."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from controller.transport.link import Inbound, Inbox, Outbound, topic_matches

__all__ = ["MemoryLink"]


class MemoryLink:
    def __init__(self, inbox_max: int = 200_000, *, online: bool = True):
        self.inbox = Inbox(inbox_max)
        self.counters: Counter[str] = Counter()
        self.connected = threading.Event()
        self.published: list[Outbound] = []
        self.retained: dict[str, Outbound] = {}
        self.subscriptions: list[tuple[str, int]] = []
        self._hooks: list[Callable[[], None]] = []
        self._online = online
        self.fast: Callable[[str, bytes, int], bool] | None = None
        self.early: Callable[[str, bytes], None] | None = None

    # --- Link ---------------------------------------------------------------------------

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        self.subscriptions.extend(filters)

    def on_connect(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def start(self, wait_s: float = 10.0) -> None:
        if self._online:
            self.go_online()

    def stop(self) -> None:
        self.connected.clear()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        if not self.connected.is_set():
            self.counters["out_failed"] += 1
            return False
        message = Outbound(topic, payload, qos, retain)
        self.published.append(message)
        if retain:
            if payload:
                self.retained[topic] = message
            else:
                self.retained.pop(topic, None)
        self.counters["out"] += 1
        return True

    def ack(self, msgs: list[Inbound]) -> None:
        self.counters["acked"] += sum(m.token is not None for m in msgs)

    def wait_written(self, timeout: float) -> bool:
        return self.connected.is_set()

    # --- what a test does ---------------------------------------------------------------

    def go_online(self) -> None:
        self.connected.set()
        for hook in self._hooks:
            hook()

    def go_offline(self) -> None:
        self.connected.clear()

    def deliver(self, topic: str, payload: bytes) -> bool:
        """A message arrives from the broker (True if a subscription matches it)."""
        if not any(topic_matches(f, topic) for f, _ in self.subscriptions):
            return False
        self.counters["in"] += 1
        if self.fast is not None and self.fast(topic, payload, time.time_ns() // 1000):
            return True
        if self.early is not None:
            self.early(topic, payload)
        if not self.inbox.put(Inbound(topic, payload)):
            self.counters["dropped_overload"] += 1
        return True

    def sent_to(self, pattern: str) -> list[Outbound]:
        """What was published on topics matching ``pattern``, in order."""
        return [m for m in self.published if topic_matches(pattern, m.topic)]
