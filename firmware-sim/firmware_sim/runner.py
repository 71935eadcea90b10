"""Run many simulated clusters in one asyncio process (one task per cluster)."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import random
from pathlib import Path

from nacl.signing import VerifyKey

from devices.areas import Network
from firmware_sim.cluster import IDLE_TICK_S, TICK_S, SimCluster, SimConfig
from firmware_sim.content import SharedStore
from firmware_sim.mqtt import quiet_lost_links

log = logging.getLogger(__name__)

__all__ = ["build_clusters", "load_verify_key", "run_clusters", "run_network"]


def load_verify_key(path: Path) -> VerifyKey:
    """A provisioned controller public key: 32 raw bytes, or base64/hex text of them."""
    raw = path.read_bytes()
    if len(raw) == 32:
        return VerifyKey(raw)
    text = raw.decode().strip()
    try:
        return VerifyKey(bytes.fromhex(text))
    except ValueError:
        return VerifyKey(base64.b64decode(text))


def build_clusters(network: Network, cfg: SimConfig) -> list[SimCluster]:
    store = SharedStore()
    return [SimCluster(c, network.cluster_area_path(c.id), cfg, store)
            for c in network.clusters.values()]


#: how long a stop waits for the boards' tasks once they are cancelled
STOP_WAIT_S = 5.0


async def run_clusters(clusters: list[SimCluster], stop: asyncio.Event,
                       connect_spread_s: float = 0.0, seed: int = 0) -> None:
    """Connect every cluster (spread over ``connect_spread_s``), run until ``stop`` is set,
    then shut down cleanly (each cluster publishes offline)."""
    quiet_lost_links(asyncio.get_running_loop())
    rng = random.Random(seed)

    async def one(sim: SimCluster) -> None:
        if connect_spread_s:
            await asyncio.sleep(rng.random() * connect_spread_s)
        await sim.run(stop)

    tasks = [asyncio.create_task(one(c), name=f"cluster-{c.id}") for c in clusters]
    helpers = [asyncio.create_task(_keep_heap_frozen(clusters, connect_spread_s + 60)),
               asyncio.create_task(tick_physics(clusters))]
    await stop.wait()
    for h in helpers:
        h.cancel()
    await asyncio.gather(*(c.stop() for c in clusters), return_exceptions=True)
    for t in tasks:
        t.cancel()
    # bounded: a board blocked in a connect (a 3.1.1 client's, in a thread) ends when that
    # connect times out, and the process must not wait for it
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_WAIT_S)


async def tick_physics(clusters: list[SimCluster]) -> None:
    """Every board's physics from one task: every TICK_S for a board with something going
    on, once IDLE_TICK_S has gone by for a quiet one, each with the time that has passed
    for it. One timer for the process instead of one per board: with thousands of boards
    the timers alone were thousands of event-loop wake-ups a second."""
    since = dict.fromkeys(range(len(clusters)), 0.0)
    while True:
        await asyncio.sleep(TICK_S)
        for i, c in enumerate(clusters):
            since[i] += TICK_S
            if c.physics_fast() or since[i] >= IDLE_TICK_S - 1e-9:
                dt, since[i] = since[i], 0.0
                try:
                    c.physics_step(dt)
                except Exception:  # one board's bug must not stop the others' physics
                    log.exception("%s: physics step failed", c.id)


#: how often the simulator moves what has survived since into the permanent generation
FREEZE_EVERY_S = 60.0
#: allocations between young-generation collections once every board has connected
GC_YOUNG_THRESHOLD = 50_000


async def _keep_heap_frozen(clusters: list[SimCluster], timeout_s: float) -> None:
    """Keep the garbage collector's full collections short. Thousands of simulated clusters
    are millions of long-lived objects, and each full collection walked them all: pauses of
    0.5-1 s, seen at 5,000 clusters, during which every simulated board stood still at once
    (a real board never waits for its neighbours' garbage). Once every cluster has
    connected (or after ``timeout_s``), and then once a minute, what has survived is
    collected once more and frozen (``gc.freeze``): later collections walk only what is
    newer. (Cycles among frozen objects that die later are not reclaimed; for a simulator
    that is a small price.)"""
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clusters)),
                               timeout_s)
    except TimeoutError:
        pass
    # a young generation far larger than the default 700: a fan-out's burst (a command,
    # its chunks and a report for each of hundreds of boards) is mostly freed by reference
    # counting before a collection would have walked it, and what does survive is not
    # walked again and again by the older generations' collections
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    try:
        while True:
            gc.collect()
            gc.freeze()
            log.debug("heap frozen: %d objects", gc.get_freeze_count())
            await asyncio.sleep(FREEZE_EVERY_S)
    finally:  # (the simulator embedded in another program, e.g. the tests, hands it back)
        gc.set_threshold(*before)


async def run_network(network: Network, cfg: SimConfig, stop: asyncio.Event,
                      connect_spread_s: float = 0.0) -> list[SimCluster]:
    clusters = build_clusters(network, cfg)
    await run_clusters(clusters, stop, connect_spread_s, cfg.seed)
    return clusters
