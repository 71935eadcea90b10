"""The smallest HTTP balancer an operator could put in front of controllers: a TCP proxy
that sends each connection to the first upstream that accepts it (nginx's ``upstream``
with ``proxy_next_upstream error``). A standby controller does not listen, so whichever
controller is active gets the traffic."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.utils.broker import free_port


class FirstUp:
    def __init__(self, upstreams: list[int]):
        self.upstreams = upstreams
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for port in self.upstreams:
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1)
            except OSError:
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            self._pipe(client, upstream)
            return
        client.close()  # nobody listens: the client sees its connection closed

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                with self._lock:
                    self._open.discard(s)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        with self._lock:
            left = list(self._open)
        for s in left:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
