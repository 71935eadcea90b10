"""The simulated board's own MQTT 5 client, against a real broker: messages both ways in
order, a quiet session survives its keep-alive, and a cut makes the broker publish the
Will (what the controller sees at a power cut)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from firmware_sim import mqtt

from tests.utils.broker import Broker

pytestmark = pytest.mark.integration

WILL = mqtt.Message("loa/v1/cluster/t1/status", b"offline")


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_messages_go_both_ways_in_order_and_a_cut_publishes_the_will(tmp_path: Path,
                                                                     v5: bool) -> None:
    broker = Broker(tmp_path).start()

    async def scenario() -> None:
        async with mqtt.connect("127.0.0.1", broker.port, client_id="watch", will=WILL,
                                keepalive=10, v5=v5) as watch, \
                mqtt.connect("127.0.0.1", broker.port, client_id="board", will=WILL,
                             keepalive=10, v5=v5) as board:
            await watch.subscribe([("loa/v1/cluster/t1/#", 1)])
            for i in range(300):
                await board.publish("loa/v1/cluster/t1/event", f"e{i}".encode(), qos=i % 2)
            board.cut()
            got = []
            async with asyncio.timeout(10):
                async for m in watch.messages():
                    got.append(m)
                    if m.topic == WILL.topic:
                        break
            assert [m.payload for m in got] == [f"e{i}".encode() for i in range(300)] + \
                [WILL.payload]

    try:
        run(scenario())
    finally:
        broker.kill()


def test_a_quiet_session_outlives_its_keepalive(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()

    async def scenario() -> None:
        async with mqtt.connect("127.0.0.1", broker.port, client_id="quiet", will=WILL,
                                keepalive=2) as s:
            await s.subscribe([("loa/v1/nothing", 1)])
            await asyncio.sleep(4.5)  # the span under test: 2.25 x keep-alive of silence
            await s.publish("loa/v1/nothing", b"still here", qos=1)
            async with asyncio.timeout(5):
                async for m in s.messages():
                    assert m.payload == b"still here"
                    break

    try:
        run(scenario())
    finally:
        broker.kill()


def test_a_3_1_1_broker_is_told_apart(tmp_path: Path) -> None:
    broker = Broker(tmp_path, embedded=True).start()

    async def scenario() -> None:
        with pytest.raises(mqtt.ProtocolUnsupported):
            async with mqtt.connect("127.0.0.1", broker.port, client_id="x", will=WILL,
                                    keepalive=10):
                pass

    try:
        run(scenario())
    finally:
        broker.kill()


def test_a_lost_links_unretrieved_error_is_not_reported_as_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    import gc
    import logging

    import aiomqtt

    async def scenario() -> None:
        mqtt.quiet_lost_links(asyncio.get_running_loop())
        lost = asyncio.get_running_loop().create_future()
        lost.set_exception(aiomqtt.MqttError("Unexpected disconnection"))
        del lost  # nobody retrieves it: asyncio reports it when it is collected
        gc.collect()
        other = asyncio.get_running_loop().create_future()
        other.set_exception(ValueError("a real bug"))
        del other
        gc.collect()

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info[1].__class__ for r in errors if r.exc_info] == [ValueError]
    assert any("already handled" in r.getMessage() for r in caplog.records)


def test_a_board_in_auto_mode_finds_a_3_1_1_broker_after_three_silences(tmp_path: Path) -> None:
    """amqtt neither answers nor hangs up on an MQTT 5 CONNECT with a Will: a board tries
    three times (an overloaded MQTT 5 broker is silent too), then speaks 3.1.1."""
    from firmware_sim.cluster import SimConfig

    from devices.areas import generate
    from tests.integration.harness import SimThread
    from tests.utils.broker import wait_for

    broker = Broker(tmp_path, embedded=True).start()
    net = generate(1, 1)
    sim = SimThread(net, SimConfig(port=broker.port, heartbeat_s=3600, protocol="auto",
                                   reconnect_min_s=0.1, reconnect_max_s=0.2)).start()
    try:
        board = sim.by_id(next(iter(net.clusters)))
        wait_for(board.connected.is_set, 40, "the board on the 3.1.1 broker")
    finally:
        sim.stop()
        broker.kill()
