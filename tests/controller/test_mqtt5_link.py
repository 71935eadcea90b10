"""The MQTT 5 link against a scripted broker (a socket speaking through the same codec):
it never has more QoS 1 publishes unacknowledged than the broker's receive maximum, holds
the rest in order, and releases them as acknowledgements come back."""

from __future__ import annotations

import socket
import threading
import time

import mqtt5

from controller.transport.mqtt import Mqtt5Link
from tests.utils.broker import wait_for


class ScriptedBroker:
    """Accepts one connection, answers CONNECT (receive maximum 2) and SUBSCRIBE, records
    every PUBLISH, and acknowledges publishes only when told to."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.published: list[mqtt5.PublishPacket] = []
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self.conn = conn
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while buf:
                try:
                    packet, n = mqtt5.read(memoryview(buf))
                except IndexError:
                    break
                buf = buf[n:]
                if isinstance(packet, mqtt5.ConnectPacket):
                    conn.sendall(mqtt5.ConnAckPacket(receive_max=2).write())
                elif isinstance(packet, mqtt5.SubscribePacket):
                    conn.sendall(mqtt5.SubAckPacket(packet.packet_id, [
                        mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]).write())
                elif isinstance(packet, mqtt5.PublishPacket):
                    self.published.append(packet)

    def ack(self, packet: mqtt5.PublishPacket) -> None:
        assert self.conn is not None and packet.packet_id is not None
        self.conn.sendall(mqtt5.PubAckPacket(packet.packet_id).write())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


def test_publishes_past_the_receive_maximum_wait_their_turn_in_order() -> None:
    broker = ScriptedBroker()
    link = Mqtt5Link("127.0.0.1", broker.port, keepalive=30)
    link.subscribe([("loa/v1/cluster/+/event", 1)])
    link.start(wait_s=5)
    try:
        assert link.connected.is_set()
        for i in range(5):
            assert link.publish("loa/v1/area/hd/cmd", f"cmd-{i}".encode(), 1)
        wait_for(lambda: len(broker.published) == 2, 5, "the first two on the wire")
        time.sleep(0.2)  # the span under test: nothing more may leave unacknowledged
        assert [p.payload for p in broker.published] == [b"cmd-0", b"cmd-1"]
        assert not link.wait_written(0.1)  # three are held back
        broker.ack(broker.published[0])
        wait_for(lambda: len(broker.published) == 3, 5, "one more after one acknowledgement")
        for p in list(broker.published[1:]):
            broker.ack(p)
        wait_for(lambda: len(broker.published) == 5, 5, "the rest")
        assert [p.payload for p in broker.published] == [f"cmd-{i}".encode() for i in range(5)]
        assert len({p.packet_id for p in broker.published}) == 5
        assert link.wait_written(1)
    finally:
        link.stop()
        broker.close()
