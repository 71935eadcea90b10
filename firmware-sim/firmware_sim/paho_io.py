"""Fewer system calls per MQTT packet for the simulator's paho clients (under aiomqtt).

Hundreds of simulated clusters share one process, and an emergency reaches all of them at
once (a command and its content chunks each, a ``playing`` report back from each). Stock
paho under aiomqtt spends most of that burst in system calls, not in the firmware:

- it reads each packet with three or four ``recv`` calls (command byte, each length byte,
  then the rest); here one ``recv`` of up to 64 KiB fills a buffer that paho's own parser
  consumes, and ``loop_read`` goes on while buffered bytes remain (the socket would not
  poll readable for them);
- it writes no packet at once: each one asks aiomqtt to register the socket for writing
  (a wake-up of the event loop, two epoll changes, a poll), and only then sends. Here a
  packet queued from the event loop's thread is sent at once, and the socket is registered
  for writing only for what the kernel did not take;
- it matches every received message against per-topic callbacks under a lock, even with
  none registered (aiomqtt registers none); here a message goes straight to
  ``on_message`` when there are none.

What goes on the wire is unchanged, byte for byte. :func:`adopt` is applied to each
``aiomqtt.Client`` before it connects. Relies on paho 2.x internals (pinned <3). The
buffered read is the same technique as the controller's ``BufferedClient``, written again
here on purpose: the simulator stands in for third-party firmware and imports nothing of
the controller's, and ``devices`` (the contract) does no I/O.
"""

from __future__ import annotations

import threading

import aiomqtt
import paho.mqtt.client as mqtt

__all__ = ["adopt"]


class _SimPaho(mqtt.Client):
    """paho's client with buffered reads and immediate writes (see the module's text).
    Instances are made by paho's own constructor and switched to this class by
    :func:`adopt`: the class adds no state of its own beyond what it sets there."""

    _rbuf: bytes
    _rpos: int
    _rsock: object
    _loop_thread: int
    _writing: bool

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._rsock:  # a new connection: nothing carries over
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)  # b"" (closed) and exceptions go to paho as is
            if len(data) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        pos = self._rpos
        out = self._rbuf[pos:pos + bufsize]
        self._rpos = pos + len(out)
        return out

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and \
                self._sock is self._rsock and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        return rc

    def _call_socket_register_write(self) -> None:
        # paho calls this when it has queued a packet (and when a send would block): from
        # the event loop's own thread, send now; register for writing only what is left
        # (not from inside a paho callback: sending a QoS 0 PUBLISH calls on_publish under
        # the callback lock, which is not re-entrant; paho's own direct write checks so too)
        if not self._writing and self._sock is not None and not self._registered_write \
                and threading.get_ident() == self._loop_thread \
                and self._in_callback_mutex.acquire(False):
            self._in_callback_mutex.release()
            self._writing = True
            try:
                rc = self._packet_write()
            finally:
                self._writing = False
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and not self._out_packet:
                return
            # the rest (or an error, which paho's own loop_write then handles) via the loop
        super()._call_socket_register_write()

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if self._on_message_filtered._root._children or on_message is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise


def adopt(client: aiomqtt.Client) -> aiomqtt.Client:
    """Switch ``client``'s paho client to the simulator's I/O (before it connects; from the
    thread of the event loop it will run on)."""
    paho_client = client._client
    if type(paho_client) is not mqtt.Client:
        return client  # already adopted, or a paho we do not know
    paho_client.__class__ = _SimPaho
    assert isinstance(paho_client, _SimPaho)
    paho_client._rbuf, paho_client._rpos, paho_client._rsock = b"", 0, None
    paho_client._loop_thread = threading.get_ident()
    paho_client._writing = False
    return client
