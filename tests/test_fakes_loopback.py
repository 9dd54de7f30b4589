"""The fake servers' shared base (`tests/fakes/loopback.py`): every test that talks HTTP relies on it to
listen on loopback only, to get a port of its own, and to stop without leaving a thread behind."""

from __future__ import annotations

import http.client
import socket
import time

import pytest
from fakes.github_server import FakeGitHub
from fakes.loopback import LoopbackHandler, LoopbackServer
from fakes.openai_server import FakeOpenAI


class _Hello(LoopbackHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        data = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Hello(LoopbackServer):
    handler = _Hello


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_it_listens_on_loopback_only_on_a_port_of_its_own() -> None:
    with Hello() as one, Hello() as two:
        assert one._server is not None and one._server.server_address[0] == "127.0.0.1"
        assert one.port != two.port
        assert one.root == f"http://127.0.0.1:{one.port}"
        assert get(one.port) == (200, b"hello") and get(two.port) == (200, b"hello")


def test_stop_ends_promptly_with_an_idle_keep_alive_connection_open() -> None:
    """A client that keeps its connection open (as the openai SDK's pool does) must not hold the stop."""
    server = Hello().start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    idle.request("GET", "/")
    assert idle.getresponse().read() == b"hello"  # the connection stays open, its handler thread waits
    thread = server._thread
    started = time.monotonic()
    server.stop()
    assert thread is not None and not thread.is_alive()
    assert time.monotonic() - started < 4, "stop waited for the idle connection's timeout"
    idle.close()
    server.stop()  # a second stop is harmless


def test_a_stopped_server_refuses_connections_and_says_it_is_not_running() -> None:
    server = Hello().start()
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError, match="Hello is not running"):
        _ = server.port


def test_a_client_hanging_up_mid_request_prints_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """A cancelled request or a killed client resets the connection while the server reads the body:
    normal for a fake under test, so nothing lands on stderr, which tests inspect."""
    with FakeGitHub() as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /repos/o/r/pulls HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"title\"")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
        time.sleep(0.2)  # the handler is now blocked reading the rest of the body
        sock.close()
        time.sleep(0.3)
        assert get(server.port, "/repos/o/r")[0] == 403, "the server still answers others (403: no User-Agent)"
    assert "Traceback" not in capfd.readouterr().err


def test_both_fakes_are_built_on_the_base() -> None:
    """One skeleton: a fix to it (binding, backlog, stop) reaches both servers."""
    for fake in (FakeOpenAI(), FakeGitHub()):
        assert isinstance(fake, LoopbackServer)
        with fake:
            assert fake.root == f"http://127.0.0.1:{fake.port}"
