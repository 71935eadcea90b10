"""The bare broker path, in its own process: ``n`` bare subscribers (aiomqtt, QoS 1, one
topic tree) and one bare publisher, connected once for the whole run.

Run as ``python -m bench.bare PORT N``. Prints ``ready`` once every subscriber holds its
subscription. Then, for each line ``SIZE SIZE ...`` read from stdin, publishes one payload
of each size (QoS 1, in order) and prints the seconds from the first publish to the moment
the last subscriber has received the last of them. Exits at the end of its input.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import aiomqtt


async def serve(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    expected: dict[int, int] = {}  # fan-out -> messages each subscriber must receive
    done: dict[int, int] = {}  # fan-out -> subscribers that have them all
    finished: dict[int, asyncio.Event] = {}

    async def sub(i: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bare-{i}") as c:
            await c.subscribe("bench/fanout/#", qos=1)
            ready.set()
            got: dict[int, int] = {}
            async for m in c.messages:
                k = int(m.topic.value.split("/")[2])
                got[k] = got.get(k, 0) + 1
                if got[k] == expected[k]:
                    done[k] += 1
                    if done[k] == n:
                        finished[k].set()

    readies = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(sub(i, readies[i])) for i in range(n)]
    for ev in readies:
        await ev.wait()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    async with aiomqtt.Client("127.0.0.1", port, identifier="bare-pub") as pub:
        threading.Thread(target=read_stdin, daemon=True).start()
        print("ready", flush=True)
        k = 0
        while (line := await lines.get()) is not None:
            sizes = [int(s) for s in line.split()]
            expected[k], done[k], finished[k] = len(sizes), 0, asyncio.Event()
            payloads = [b"\0" * s for s in sizes]
            t0 = time.perf_counter()
            for i, p in enumerate(payloads):
                await pub.publish(f"bench/fanout/{k}/{i}", p, qos=1)
            await asyncio.wait_for(finished[k].wait(), 120)
            print(f"{time.perf_counter() - t0:.6f}", flush=True)
            k += 1
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
