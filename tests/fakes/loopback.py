"""The HTTP skeleton shared by the fake servers: 127.0.0.1, an ephemeral port, one serving thread.

A fake subclasses `LoopbackServer` (its state and scripting) and `LoopbackHandler` (its routes), and sets
`handler` to the latter. The base owns what every fake needs the same way and what is easy to get subtly
wrong: binding to loopback only (tests never listen on a public interface), port 0 so parallel tests do
not collide, a listen backlog large enough that bursts of connections are not delayed by TCP
retransmits, quiet handling of clients that hang up, and a `stop()` that wakes handler threads blocked
on idle keep-alive connections so none outlives its test for long.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

_Self = TypeVar("_Self", bound="LoopbackServer")


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-connection (a cancelled request, a killed process) is normal here:
    socketserver would print a traceback to stderr, which lands in the output tests inspect.

    The listen backlog is raised from socketserver's 5: a client opening dozens of connections at
    once would otherwise see SYNs dropped and wait a full second for TCP to retransmit, a delay no
    real server imposes and one that would distort every timing measured against a fake."""

    request_queue_size = 256
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class LoopbackHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 with silent logs; `fake` is the `LoopbackServer` this handler answers for."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK adds a wait to each.
    disable_nagle_algorithm = True
    fake: LoopbackServer  # set on the per-server subclass made by LoopbackServer.start

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.fake._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean


class LoopbackServer:
    """A server on 127.0.0.1:<ephemeral port>; use as a context manager or start()/stop()."""

    handler: ClassVar[type[LoopbackHandler]] = LoopbackHandler

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def start(self: _Self) -> _Self:
        class Handler(self.handler):  # type: ignore[name-defined,misc]  # one subclass per running server
            fake = self

        server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return int(self._server.server_address[1])

    @property
    def root(self) -> str:
        """`http://127.0.0.1:PORT`, with no path."""
        return f"http://127.0.0.1:{self.port}"

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
