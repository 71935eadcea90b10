"""The simulator's paho I/O (buffered reads, immediate writes): through a real broker every
packet must still arrive whole and in order, both ways, whatever its size, including writes
the kernel cannot take at once."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiomqtt
import pytest
from firmware_sim import paho_io

from tests.integration.harness import Broker

pytestmark = pytest.mark.integration


def payloads(n: int) -> list[bytes]:
    # command-sized, chunk-sized, larger than one 64 KiB read, and empty
    sizes = [700 if i % 3 == 0 else 16_384 for i in range(n)]
    sizes[n // 2], sizes[n // 3] = 200_000, 0
    return [(f"{i:05d}".encode() * (s // 5 + 1))[:s] for i, s in enumerate(sizes)]


def digests(items: list[bytes]) -> list[str]:
    return [hashlib.sha256(p).hexdigest() for p in items]


async def receive(client: aiomqtt.Client, n: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    async for m in client.messages:
        got.append((m.topic.value, bytes(m.payload)))  # type: ignore[arg-type]
        if len(got) == n:
            return got
    return got


@pytest.mark.parametrize("qos", [0, 1])
def test_an_adopted_client_receives_a_burst_whole_and_in_order(tmp_path: Path,
                                                                 qos: int) -> None:
    broker = Broker(tmp_path).start()
    sent = payloads(300)

    async def main() -> list[tuple[str, bytes]]:
        async with paho_io.adopt(aiomqtt.Client("127.0.0.1", broker.port,
                                                identifier="adopted-rx")) as rx:
            await rx.subscribe("t/#", qos=qos)
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="plain-tx") as tx:
                for i, p in enumerate(sent):
                    await tx.publish(f"t/{i % 7}", p, qos=qos)
                return await asyncio.wait_for(receive(rx, len(sent)), 30)

    try:
        got = asyncio.run(main())
    finally:
        broker.kill()
    assert digests([p for _, p in got]) == digests(sent)
    assert [t for t, _ in got] == [f"t/{i % 7}" for i in range(len(sent))]


@pytest.mark.parametrize("qos", [0, 1])
def test_an_adopted_client_sends_what_the_kernel_takes_now_and_the_rest_later(
        tmp_path: Path, qos: int) -> None:
    """Published back to back without yielding: 300 packets, 20 MB in all, far more than a
    socket buffer holds, so most writes cannot complete at once and must be finished by
    the event loop."""
    broker = Broker(tmp_path).start()
    sent = payloads(300) + [b"\x07" * 4_000_000] * 4

    async def main() -> list[tuple[str, bytes]]:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="plain-rx",
                                  max_queued_incoming_messages=0) as rx:
            await rx.subscribe("u/#", qos=qos)
            async with paho_io.adopt(aiomqtt.Client("127.0.0.1", broker.port,
                                                    identifier="adopted-tx",
                                                    max_inflight_messages=1000)) as tx:
                pubs = [asyncio.create_task(tx.publish(f"u/{i}", p, qos=qos))
                        for i, p in enumerate(sent)]
                got = await asyncio.wait_for(receive(rx, len(sent)), 60)
                await asyncio.gather(*pubs)
                return got

    try:
        got = asyncio.run(main())
    finally:
        broker.kill()
    assert digests([p for _, p in got]) == digests(sent)
    assert [t for t, _ in got] == [f"u/{i}" for i in range(len(sent))]


def test_adopting_twice_changes_nothing() -> None:
    async def main() -> None:
        client = aiomqtt.Client("127.0.0.1", 1, identifier="twice")
        assert paho_io.adopt(paho_io.adopt(client)) is client
        assert type(client._client).__name__ == "_SimPaho"

    asyncio.run(main())
