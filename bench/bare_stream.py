"""The bare broker path for streams, in its own process: ``n`` bare subscribers (aiomqtt,
QoS 0) and one bare publisher sending batches the size of a stream's (5 Opus frames, ~900
bytes) ten times a second for ``seconds``, each stamped with its send time.

Run as ``python -m bench.bare_stream PORT N SECONDS``; prints one JSON line: latency from
publish to receipt (p50, p95, ms) and, per batch, the spread of its arrival over the
subscribers (p99, ms).
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time

import aiomqtt


async def main(port: int, n: int, seconds: float) -> None:
    arrivals: dict[int, list[float]] = {}
    sent: dict[int, float] = {}
    ready = [asyncio.Event() for _ in range(n)]
    count = int(seconds * 10)
    got = asyncio.Event()
    received = 0

    async def sub(i: int) -> None:
        nonlocal received
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bare-stream-{i}") as c:
            await c.subscribe("bench/stream/#", qos=0)
            ready[i].set()
            async for m in c.messages:
                now = time.time()
                (k,) = struct.unpack_from(">I", bytes(m.payload))  # type: ignore[arg-type]
                arrivals.setdefault(k, []).append(now)
                received += 1
                if received == n * count:
                    got.set()

    tasks = [asyncio.create_task(sub(i)) for i in range(n)]
    for ev in ready:
        await ev.wait()
    async with aiomqtt.Client("127.0.0.1", port, identifier="bare-stream-pub") as pub:
        t0 = time.time()
        for k in range(count):
            delay = t0 + k * 0.1 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[k] = time.time()
            await pub.publish("bench/stream/s", struct.pack(">I", k) + b"\0" * 900, qos=0)
        try:
            await asyncio.wait_for(got.wait(), 30)
        except TimeoutError:
            pass
    for t in tasks:
        t.cancel()
    lat = sorted((a - sent[k]) * 1000 for k, arr in arrivals.items() for a in arr)
    skew = sorted((max(arr) - min(arr)) * 1000 for arr in arrivals.values() if len(arr) == n)
    p = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")
    print(json.dumps({"latency_p50_ms": p(lat, 0.5), "latency_p95_ms": p(lat, 0.95),
                      "skew_p99_ms": p(skew, 0.99), "complete_batches": len(skew)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
