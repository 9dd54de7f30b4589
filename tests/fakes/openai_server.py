"""A fake OpenAI-compatible server for tests and benchmarks: real HTTP on 127.0.0.1, deterministic.

It speaks just enough of the protocol for the openai SDK (and any other client) to talk to it:

* `POST /v1/chat/completions` answers in the chat-completion JSON shape, with `usage` counted as
  whitespace-separated words (prompt: all message texts; completion: the reply text). If the request
  has `max_tokens` (or `max_completion_tokens`) and the reply is longer, the reply is cut to that many
  words and `finish_reason` becomes "length", as a real server would do.
* `GET /v1/models` lists one model, for health checks.
* Errors use OpenAI's shape: `{"error": {"message", "type", "code"}}`.

Usage::

    with FakeOpenAI(responder=lambda body: "positive", delay=0.01) as server:
        client = AsyncOpenAI(base_url=server.url, api_key="x")
        ...
        server.fail_next(2, status=429, headers={"Retry-After": "1"})  # next two attempts get 429
        server.queue(Reply(text="cut off", finish_reason="length"))     # then a scripted reply
        assert server.attempts == 3 and len(server.requests) == 1 and server.max_in_flight <= 4

What to read back:

* `requests` — the JSON bodies of chat requests answered with status 200, in arrival order
  (recorded when the answer is decided, before any delay). Failed/scripted-error attempts are not here.
* `attempts` — how many chat-completion POSTs arrived at all, errors included.
* `in_flight` / `max_in_flight` — chat requests being handled now / at the peak (including delays).
* `headers` — the request headers of each attempt (lower-cased names), e.g. to check the API key sent.
* `errors` — exceptions raised by the responder (each such attempt was answered with a 500).

Faults worth testing against: `Reply(body="<html>…</html>", content_type="text/html")` (a proxy's page
with status 200), `Reply(body={"garbled": True})` (JSON of the wrong shape), `echo_headers("authorization")`
(a server that leaks the request's headers into its answers).

How a reply is chosen, per attempt: the oldest queued `Reply` (see `queue`, `fail_next`) if any,
else `responder(body)`, which may return a `str` (the answer text) or a `Reply`. The default responder
echoes the last user message as `"echo: <text>"`. `delay` (server-wide) or `Reply.delay` sleeps
before answering, which is how timeouts are provoked. Ids and timestamps are derived from the request,
so the same request always gets byte-identical answers.

The server runs in daemon threads; `stop()` (or leaving the `with` block) closes every open
connection so no thread outlives the test for long.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakes.loopback import LoopbackHandler, LoopbackServer

CREATED = 1_700_000_000  # a fixed timestamp: answers must not depend on when the test ran

_ERROR_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", "timeout"),
    409: ("conflict", "conflict"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_DEFAULT_MESSAGES = {
    401: "Incorrect API key provided.",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request.",
    503: "The server is overloaded.",
}


@dataclass
class Reply:
    """A scripted answer. `status` != 200 makes it an error whose message is `text` (or a default).

    `body` replaces the whole response body (a dict is sent as JSON, a str as-is), for malformed
    replies; `content_type` is sent with it (a proxy's error page comes as text/html). `delay` overrides
    the server's delay for this answer.
    """

    text: str = ""
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float | None = None
    body: dict[str, Any] | str | None = None
    content_type: str = "application/json"


Responder = Callable[[dict[str, Any]], "str | Reply"]


def _content_text(content: Any) -> str:
    """Message content as text: a plain string, or the text parts of a multi-part content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def echo_responder(body: dict[str, Any]) -> str:
    """The default: `echo: ` plus the last user message."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return "echo: " + _content_text(message.get("content"))
    return "echo:"


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


class FakeOpenAI(LoopbackServer):
    """A running fake server; see the module docstring. Use as a context manager or start()/stop()."""

    def __init__(self, responder: Responder | None = None, delay: float = 0.0, model: str = "fake-model"):
        super().__init__()
        self.responder: Responder = responder or echo_responder
        self.delay = delay
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.errors: list[Exception] = []
        self.attempts = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.echoed_headers: tuple[str, ...] = ()  # see echo_headers
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()

    # -- lifecycle: start/stop/port and the context manager come from LoopbackServer -------------------

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. `http://127.0.0.1:PORT/v1`."""
        return f"{self.root}/v1"

    # -- scripting -----------------------------------------------------------------------------------

    def queue(self, *replies: Reply) -> None:
        """Answer the next attempts with these replies, in order, before asking the responder again."""
        with self._lock:
            self._queue.extend(replies)

    def fail_next(
        self,
        n: int,
        status: int = 500,
        *,
        headers: dict[str, str] | None = None,
        text: str = "",
        delay: float | None = None,
    ) -> None:
        """Make the next `n` attempts fail with `status` (e.g. 429 with {"Retry-After": "1"})."""
        self.queue(*(Reply(text=text, status=status, headers=dict(headers or {}), delay=delay) for _ in range(n)))

    def reset(self) -> None:
        """Forget recorded requests and counters (not the responder, delay or queued replies)."""
        with self._lock:
            self.requests.clear()
            self.headers.clear()
            self.attempts = 0
            self.max_in_flight = self.in_flight

    # -- answering (called from handler threads) ---------------------------------------------------------

    def echo_headers(self, *names: str) -> None:
        """From now on, append the request's headers `names` (e.g. "authorization") to every 200 answer's
        text, as a misconfigured proxy or a debugging server does: the client must not pass them on."""
        self.echoed_headers = tuple(n.lower() for n in names)

    def _decide(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.attempts += 1
            self.headers.append(headers)
            scripted = self._queue.popleft() if self._queue else None
        try:
            reply = scripted if scripted is not None else self.responder(body)
        except Exception as exc:  # a broken responder is a test bug: answer 500 and keep it for the test
            with self._lock:
                self.errors.append(exc)
            return Reply(text=f"responder raised {exc!r}", status=500)
        if isinstance(reply, str):
            reply = Reply(text=reply)
        if self.echoed_headers and reply.status == 200 and reply.body is None:
            echoed = " ".join(f"{n}: {headers.get(n, '')}" for n in self.echoed_headers)
            reply = dataclasses.replace(reply, text=f"{reply.text} (request headers: {echoed})")
        if reply.status == 200:
            with self._lock:
                self.requests.append(body)
        return reply

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def completion_body(request: dict[str, Any], reply: Reply, model: str) -> dict[str, Any]:
    """The chat.completion JSON for `reply`, honouring the request's max_tokens like a real server."""
    text, finish_reason = reply.text, reply.finish_reason
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    words = text.split()
    if isinstance(limit, int) and len(words) > limit:
        text, finish_reason = " ".join(words[:limit]), "length"
    prompt_tokens = sum(count_tokens(_content_text(m.get("content"))) for m in request.get("messages") or [])
    completion_tokens = count_tokens(text)
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": CREATED,
        "model": request.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error_body(status: int, message: str = "") -> dict[str, Any]:
    """OpenAI's error JSON for `status`."""
    kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    text = message or _DEFAULT_MESSAGES.get(status) or f"HTTP {status}"
    return {"error": {"message": text, "type": kind, "param": None, "code": code}}


class _Handler(LoopbackHandler):
    """Routes of the OpenAI protocol; every response carries Content-Length."""

    fake: FakeOpenAI

    def _send(self, status: int, payload: dict[str, Any] | str, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. its timeout fired): nothing to tell it
            self.close_connection = True

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw or b"null")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.rstrip("/") == "/v1/models":
            model = self.fake.model
            self._send(
                200,
                {
                    "object": "list",
                    "data": [{"id": model, "object": "model", "created": CREATED, "owned_by": "fake-openai"}],
                },
            )
        else:
            self._send(404, error_body(404, f"no route GET {self.path}"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            body = self._read_json()
        except (ValueError, OSError):
            self._send(400, error_body(400, "request body is not valid JSON"))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, error_body(404, f"no route POST {self.path}"))
            return
        if not isinstance(body, dict):
            self._send(400, error_body(400, "request body must be a JSON object"))
            return
        state = self.fake
        state._enter()
        try:
            reply = state._decide(body, {k.lower(): v for k, v in self.headers.items()})
            delay = state.delay if reply.delay is None else reply.delay
            if delay > 0:
                time.sleep(delay)
            if reply.body is not None:
                self._send(reply.status, reply.body, reply.headers, reply.content_type)
            elif reply.status == 200:
                self._send(200, completion_body(body, reply, state.model), reply.headers)
            else:
                self._send(reply.status, error_body(reply.status, reply.text), reply.headers)
        finally:
            state._leave()


FakeOpenAI.handler = _Handler
