"""The one place that talks to a model: async client, adaptive limiter, retries, cache, usage and cost.

Everything above this module asks for `await client.complete(model, messages)` and gets a `Completion`
back, or an `LMError` whose one line says what failed where. What it hides, and why:

* The openai SDK is imported lazily, on the first cache miss: importing it is slow, and a
  fully cached re-run (a resume, a report, CI replaying a run) should not pay for a client it never uses.
* The SDK's own retries are off (`max_retries=0`): we retry ourselves so that a wait does not hold a
  concurrency slot, a 429 can slow the whole client down, and every retry is counted in `Usage`.
* Concurrency is bounded by an adaptive limiter: a rate-limited endpoint gets fewer parallel requests
  (halved on 429) and earns them back slowly, instead of being hammered into longer and longer bans.
* Answers are cached by the exact request (see `cache.py`), so repeated evaluations cost nothing.
* The API key lives only inside the SDK client. It is never logged, cached, or put into an error
  message. A server (or proxy) that echoes the Authorization header back would otherwise hand the key
  to everything downstream of an answer (cache, checkpoint, report, PR), so the key and the other
  secrets the client is given are replaced in every answer *before* it is cached or returned.
* A 200 whose body is not a chat completion (a proxy's HTML error page, `{"garbled": true}`) is a
  flaky hop, not a verdict: it is retried like a 5xx, and every retry is counted by kind.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import gc
import math
import random
import re
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..cache import ResponseCache, cache_key
from ..config import CONFIG_NAME, LMConfig, Price
from ..errors import InputError, RunError

if TYPE_CHECKING:  # pragma: no cover - only for type checkers; the real import is lazy
    from openai import AsyncOpenAI

#: Where requests go when neither gepa.yaml nor OPENAI_BASE_URL names a server.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Sent to servers that need no key (llama.cpp, vLLM, ...): the SDK insists on some string.
PLACEHOLDER_API_KEY = "unused"
#: The longest we honour a server's Retry-After; beyond that the server is down, not busy.
RETRY_AFTER_CAP = 120.0
#: Statuses worth another try: timeouts, conflicts, rate limits and server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: What replaces a secret found in a model's answer or a server's error text.
REDACTED = "[redacted]"
#: Secrets shorter than this are not redacted: replacing every "x" of an answer (a test key, the
#: placeholder of a keyless server) would corrupt results while protecting nothing a real key is.
MIN_SECRET_LENGTH = 8
#: Names of the retry kinds counted in `Usage` (report.json's `retries_by_kind`).
RETRY_KINDS = ("rate_limited", "server_error", "timeout", "connection", "invalid_reply", "other")


class LMError(RunError):
    """A model request that failed for good: status (or timeout), endpoint and model in one line."""

    def __init__(self, message: str, *, status: int | None, endpoint: str, model: str, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint
        self.model = model
        self.attempts = attempts


@dataclass(frozen=True)
class Completion:
    """One answer. `truncated` means the model hit max_tokens, so the text is cut off mid-thought.

    `model` is the name as requested (the key for prices and usage), not the server's variant name.
    Token counts are the server's; a cached answer keeps the counts it had when it was fetched.
    """

    text: str
    finish_reason: str
    truncated: bool
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    model: str
    retries: tuple[str, ...] = ()  # the kind of each retry this answer needed (see RETRY_KINDS)


@dataclass
class ModelUsage:
    """Counters for one model. `requests` counts answers the server actually sent."""

    requests: int = 0
    cached: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries_by_kind: dict[str, int] = field(default_factory=dict)


class Usage:
    """What a run spent, per model and in total. Cached answers cost nothing and add no tokens.

    Costs come from `LMConfig.prices` (USD per 1M tokens) and stay unrounded here so sums are exact
    enough; round only when printing. Models without a price are listed in `unpriced_models` so a
    report can say "cost unknown" instead of a misleading $0.
    """

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices: dict[str, Price] = dict(prices or {})
        self.models: dict[str, ModelUsage] = {}

    def _model(self, model: str) -> ModelUsage:
        return self.models.setdefault(model, ModelUsage())

    def record_answer(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        counters = self._model(model)
        counters.requests += 1
        counters.prompt_tokens += prompt_tokens
        counters.completion_tokens += completion_tokens
        price = self.prices.get(model)
        if price is not None:
            counters.cost_usd += (prompt_tokens * price.input + completion_tokens * price.output) / 1e6

    def record_cached(self, model: str) -> None:
        self._model(model).cached += 1

    def record_retry(self, model: str, kind: str = "other") -> None:
        counters = self._model(model)
        counters.retries += 1
        counters.retries_by_kind[kind] = counters.retries_by_kind.get(kind, 0) + 1

    def total_cost(self) -> float:
        return sum(m.cost_usd for m in self.models.values())

    def unpriced_models(self) -> list[str]:
        """Models that were really called (not just served from cache) but have no price."""
        return sorted(name for name, m in self.models.items() if m.requests and name not in self.prices)

    def to_dict(self) -> dict[str, Any]:
        total = ModelUsage()
        for m in self.models.values():
            total.requests += m.requests
            total.cached += m.cached
            total.retries += m.retries
            total.prompt_tokens += m.prompt_tokens
            total.completion_tokens += m.completion_tokens
            total.cost_usd += m.cost_usd
            for kind, n in m.retries_by_kind.items():
                total.retries_by_kind[kind] = total.retries_by_kind.get(kind, 0) + n
        return {
            **asdict(total),
            "models": {name: asdict(m) for name, m in sorted(self.models.items())},
            "unpriced_models": self.unpriced_models(),
        }

    def summary(self) -> str:
        """One human line, e.g. `12 requests, 30 cached, 1 retry, 3400+900 tokens, $0.0012`."""
        d = self.to_dict()
        retries = format_retries(d["retries"], d["retries_by_kind"])
        cost = format_cost(d["cost_usd"])
        if d["unpriced_models"]:
            cost += f" (+ unpriced: {', '.join(d['unpriced_models'])})"
        return (
            f"{d['requests']} requests, {d['cached']} cached, {retries}, "
            f"{d['prompt_tokens']}+{d['completion_tokens']} tokens, {cost}"
        )


def format_retries(total: int, by_kind: Mapping[str, int] | None) -> str:
    """`3 retries (2 rate_limited, 1 invalid_reply)`: how flaky the endpoint was, at a glance."""
    text = f"{total} retr{'y' if total == 1 else 'ies'}"
    kinds = [f"{n} {kind}" for kind, n in sorted((by_kind or {}).items(), key=lambda kv: (-kv[1], kv[0])) if n]
    return f"{text} ({', '.join(kinds)})" if total and kinds else text


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced by REDACTED (secrets are pre-filtered by `secret_list`)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD. A server may answer `"\\ud800"` (valid JSON, not valid
    text): passed on, it would crash whatever writes the answer out (cache, checkpoint, report, terminal)."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def secret_list(*values: str | None) -> tuple[str, ...]:
    """The distinct secrets worth redacting, longest first (a key that contains another is replaced whole)."""
    kept = {v.strip() for v in values if v and len(v.strip()) >= MIN_SECRET_LENGTH}
    return tuple(sorted(kept, key=len, reverse=True))


def format_cost(usd: float) -> str:
    """Dollars for people: cents for big sums, three significant digits for tiny ones ($0.000130)."""
    if usd <= 0:
        return "$0"
    decimals = max(2, 2 - math.floor(math.log10(usd)))
    return f"${usd:.{decimals}f}"


class AdaptiveLimiter:
    """At most `limit` requests in flight; `limit` halves on a 429 and creeps back up on success.

    Additive increase, multiplicative decrease, as TCP does: after `limit` successes in a row the limit
    grows by one, up to `maximum`. Only one cut per "generation": the 429s of requests that were
    already in flight when the limit was cut answer the old rate, so they do not cut it again (a burst
    of 429s would otherwise drive the limit to 1 at once).

    Slots are handed directly to the oldest waiter on release, so waiting is first come, first served.
    Futures are created in the running loop at wait time, so the limiter is not tied to one loop.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.in_flight = 0
        self._generation = 0
        self._streak = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> int:
        """Wait for a slot; return the generation to pass to `rate_limited` if this request gets a 429."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self._generation
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just before the cancel: pass it on
            raise
        return self._generation

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def succeeded(self) -> None:
        self._streak += 1
        if self.limit < self.maximum and self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            self._wake()

    def rate_limited(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._generation += 1
        self._streak = 0
        self.limit = max(1, self.limit // 2)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            self.in_flight += 1
            waiter.set_result(None)


def _import_openai() -> ModuleType:
    """Import the SDK with the cyclic GC paused: it defines thousands of pydantic classes, and the
    collector's passes over them during the import are a good part of its cost. Freezing afterwards keeps later
    collections from rescanning those long-lived objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        import openai
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    return openai


def missing_key_error(config: LMConfig) -> InputError:
    name = config.api_key_env
    return InputError(CONFIG_NAME, f"no API key: the environment variable {name} is not set", key="lm.api_key_env",
                      hint=f"export {name}=<your key>, or set lm.base_url to a local OpenAI-compatible server")


def resolve_endpoint(config: LMConfig, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """Return (base_url, api_key): the config's base_url or $OPENAI_BASE_URL, and the key from the
    variable the config names. Kept separate from the client so the CLI decides what the environment is.
    """
    base_url = config.base_url or environ.get("OPENAI_BASE_URL") or None
    api_key = environ.get(config.api_key_env) or None
    return base_url, api_key


@dataclass(frozen=True)
class _Failure:
    """One failed attempt, classified: what to call it, whether to retry, how long the server asks."""

    reason: str  # "HTTP 429", "timeout", "connection error", "invalid reply"
    status: int | None
    detail: str
    retryable: bool
    retry_after: float | None = None
    kind: str = "other"  # one of RETRY_KINDS, for the usage counters


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, from `retry-after-ms` or `Retry-After` (seconds or a date)."""
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = None
    if value is None and (raw := headers.get("retry-after")):
        try:
            value = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                return None
            value = when.timestamp() - time.time()
    if value is None:
        return None
    return min(max(value, 0.0), RETRY_AFTER_CAP)


def _one_line(text: str, secrets: tuple[str, ...], limit: int = 200) -> str:
    """Short, single-line, secret-free server text for an error message."""
    text = " ".join(redact(text, secrets).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Route:
    """Where one model is served when not at the client's base_url (e.g. a local server per model).

    `cache_id` stands for the server in cache keys: a local server's port changes every run while its
    weights do not, so the id names the weights (their sha256), and a re-run still hits the cache.
    `crashed`, for a server this process runs, says whether it died (one line: how, its last output,
    what to try) or None while it lives: a failed request to a dead server is reported as that crash
    at once instead of being retried as an unreachable endpoint.
    """

    base_url: str
    cache_id: str
    crashed: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)


class ServerCrashed(LMError):
    """The model's server (a local one this process started) died: retrying cannot help."""


class LMClient:
    """Async chat completions with a bounded, adaptive concurrency, retries, a cache and usage counters.

    Use one client per run, as `async with LMClient(...) as lm:`. The cache belongs to the caller (it is
    not closed here); `cache=None` bypasses it (the CLI's --no-cache). `backoff_base`/`backoff_cap`
    shape the exponential backoff between retries; tests shrink them. `routes` sends the models it
    names to their own servers (no key needed there) instead of `base_url`. `secrets` are further
    values (e.g. the GitHub token) that must never come out of an answer: they and the API key are
    redacted from every answer before it is cached or returned.

    `fresh=True` asks the model again for every request instead of trusting the cache (the drift watch:
    a provider may change the weights behind a model name, and a cached answer would hide exactly that).
    The fresh answer still replaces the cached one, so a later `eval` or `tune` starts from what the
    model says now; within the run, an identical request is answered once (the key is the request, so
    an answer fetched by this client is as fresh as the first).
    """

    def __init__(
        self,
        config: LMConfig,
        *,
        api_key: str | None,
        base_url: str | None,
        cache: ResponseCache | None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        routes: Mapping[str, Route] | None = None,
        secrets: tuple[str | None, ...] = (),
        fresh: bool = False,
    ) -> None:
        self.config = config
        self.fresh = fresh
        self._fetched: set[str] = set()  # keys this client fetched itself (the only hits `fresh` trusts)
        self.routes: dict[str, Route] = dict(routes or {})
        self.cache = cache
        self.usage = Usage(config.prices)
        self.limiter = AdaptiveLimiter(config.concurrency)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        explicit_url = base_url or config.base_url
        self.base_url = (explicit_url or DEFAULT_BASE_URL).rstrip("/")
        self.endpoint = self.base_url + "/chat/completions"
        self._api_key = api_key
        self._secrets = secret_list(api_key, *secrets)
        self._has_explicit_url = bool(explicit_url)
        self._openai: ModuleType | None = None
        self._client: AsyncOpenAI | None = None
        self.sdk_import_s = 0.0
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._routed: dict[str, AsyncOpenAI] = {}  # SDK clients of routed servers, by base_url
        # One lock per in-flight cache key: identical concurrent requests wait for the first answer
        # (then hit the cache) instead of paying for it twice. Weak values: locks vanish when unused.
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._rng = random.Random()  # jitter only: timing, never results

    async def __aenter__(self) -> LMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (if any were opened). The cache is the caller's to close."""
        client, self._client = self._client, None
        routed, self._routed = list(self._routed.values()), {}
        if self._client_loop is asyncio.get_running_loop():
            for each in [c for c in (client, *routed) if c is not None]:
                await each.close()

    async def complete(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sample: int = 0,
    ) -> Completion:
        """Answer `messages` with `model`; None means the config's temperature / max_tokens.

        `sample` numbers repeated draws of one request; it matters only at temperature > 0 (see
        `cache_key`). Raises `LMError` once retries are exhausted or on a non-retryable status.
        """
        temperature = self.config.temperature if temperature is None else temperature
        max_tokens = self.config.max_tokens if max_tokens is None else max_tokens
        if self.cache is None:
            data, retries = await self._fetch(model, messages, temperature, max_tokens)
            return self._completion(data, model, cached=False, retries=retries)

        route = self.routes.get(model)
        key = cache_key(
            base_url=route.cache_id if route else self.base_url,
            model=model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            sample=sample,
        )
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        async with lock:
            hit = self.cache.get(key) if not self.fresh or key in self._fetched else None
            if _valid_entry(hit):
                self.usage.record_cached(model)
                return self._completion(hit, model, cached=True)
            data, retries = await self._fetch(model, messages, temperature, max_tokens)
            self.cache.put(key, data)  # truncated answers too: they are what this request yields
            self._fetched.add(key)
        return self._completion(data, model, cached=False, retries=retries)

    def _completion(self, data: Mapping[str, Any], model: str, *, cached: bool,
                    retries: tuple[str, ...] = ()) -> Completion:
        finish_reason = str(data["finish_reason"])
        return Completion(
            # Redacted again on the way out: a cache written by an older version may hold an echoed key.
            text=redact(data["text"], self._secrets),
            finish_reason=finish_reason,
            truncated=finish_reason == "length",
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
            cached=cached,
            model=model,
            retries=retries,
        )

    def endpoint_for(self, model: str) -> str:
        """The chat-completions URL that requests for `model` go to (for error messages)."""
        route = self.routes.get(model)
        return route.base_url.rstrip("/") + "/chat/completions" if route else self.endpoint

    def _sdk(self, model: str | None = None) -> tuple[ModuleType, AsyncOpenAI]:
        """Import openai and build the SDK client on first need (per event loop: its pool is loop-bound).

        A routed model gets the client of its own server (a keyless local one), built on first need too.
        """
        loop = asyncio.get_running_loop()
        if self._openai is None:
            started = time.perf_counter()
            self._openai = _import_openai()
            self.sdk_import_s = time.perf_counter() - started  # the engine leaves it out of its search time
        if self._client_loop is not loop:  # clients of another loop cannot be used (nor closed) here
            self._client, self._routed, self._client_loop = None, {}, loop
        route = self.routes.get(model) if model is not None else None
        if route is not None:
            if route.base_url not in self._routed:
                self._routed[route.base_url] = self._openai.AsyncOpenAI(
                    base_url=route.base_url, api_key=PLACEHOLDER_API_KEY, timeout=self.config.timeout, max_retries=0)
            return self._openai, self._routed[route.base_url]
        if self._client is None:
            api_key = self._api_key
            if not api_key:
                if not self._has_explicit_url:
                    raise missing_key_error(self.config)
                api_key = PLACEHOLDER_API_KEY
            self._client = self._openai.AsyncOpenAI(
                base_url=self.base_url, api_key=api_key, timeout=self.config.timeout, max_retries=0
            )
        return self._openai, self._client

    async def _fetch(
        self, model: str, messages: list[dict[str, Any]], temperature: float, max_tokens: int
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """One logical request: acquire a slot, call, release; on a retryable failure wait (slot-free)
        and try again, up to `config.max_retries` retries. Returns the cacheable (redacted) answer and
        the kinds of the retries it took."""
        openai, client = self._sdk(model)
        attempts = 0
        retries: list[str] = []
        while True:
            attempts += 1
            generation = await self.limiter.acquire()
            failure: _Failure | None = None
            try:
                # The SDK's generic `post` (its documented way to send any request) skips the typed
                # parameter transform and the response models: CPU saved on every call on the
                # hot path of tuning, with the same auth, timeouts and error types.
                reply = await client.post(
                    "/chat/completions",
                    cast_to=object,
                    body={"model": model, "messages": messages, "temperature": temperature,
                          "max_tokens": max_tokens},
                )
            except openai.APIError as exc:
                failure = self._classify(openai, exc)
            except ValueError as exc:  # a 200 whose body is not JSON at all (the SDK's json.loads)
                failure = _Failure("invalid reply", 200, f"the body is not JSON ({exc})", retryable=True,
                                   kind="invalid_reply")
            finally:
                self.limiter.release()
            if failure is None:
                data = self._answer(reply)
                if data is not None:
                    self.limiter.succeeded()
                    self.usage.record_answer(model, data["prompt_tokens"], data["completion_tokens"])
                    return data, tuple(retries)
                failure = _Failure("invalid reply", 200, "not a chat completion: " + str(reply), retryable=True,
                                   kind="invalid_reply")
            if failure.status == 429:
                self.limiter.rate_limited(generation)
            # a dead server shows as a broken connection; anything else is a live server's answer
            await self._raise_if_crashed(model, attempts, wait=1.0 if failure.kind in ("connection", "timeout") else 0)
            if not failure.retryable or attempts > self.config.max_retries:
                raise self._error(failure, model, attempts)
            self.usage.record_retry(model, failure.kind)
            retries.append(failure.kind)
            await asyncio.sleep(self._delay(attempts, failure.retry_after))

    async def _raise_if_crashed(self, model: str, attempts: int, wait: float = 1.0) -> None:
        """After a failed request to a server this process runs: if it died, raise its crash report.

        The socket closes a moment before the dead process can be reaped, so a short wait (polled, never
        blocking the loop) tells a crash from a hiccup."""
        route = self.routes.get(model)
        if route is None or route.crashed is None:
            return
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            report = route.crashed()
            if report is not None:
                raise ServerCrashed(report, status=None, endpoint=self.endpoint_for(model), model=model,
                                    attempts=attempts)
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.05)

    def _answer(self, reply: Any) -> dict[str, Any] | None:
        """The cacheable answer from the chat-completion JSON, secrets redacted; None for another shape."""
        try:
            choice = reply["choices"][0]
            content = choice["message"].get("content")
            usage = reply.get("usage") or {}
            data = {
                "text": well_formed(redact(content, self._secrets)) if isinstance(content, str) else "",
                "finish_reason": well_formed(str(choice.get("finish_reason") or "unknown")),
                # A garbage count (negative, a string) must not buy budget back or crash the accounting.
                "prompt_tokens": max(0, int(usage.get("prompt_tokens") or 0)),
                "completion_tokens": max(0, int(usage.get("completion_tokens") or 0)),
            }
        except (TypeError, KeyError, IndexError, AttributeError, ValueError):
            return None
        return data

    def _classify(self, openai: ModuleType, exc: Exception) -> _Failure:
        if isinstance(exc, openai.APITimeoutError):
            return _Failure("timeout", None, f"no answer within {self.config.timeout:g} s", retryable=True,
                            kind="timeout")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            return _Failure("connection error", None, str(cause) if cause else exc.message, retryable=True,
                            kind="connection")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            body = exc.body
            if isinstance(body, Mapping) and body.get("message"):
                detail = str(body["message"])
            else:
                detail = str(body) if body else exc.message
            return _Failure(
                f"HTTP {status}",
                status,
                detail,
                retryable=status in RETRYABLE_STATUSES or status >= 500,
                retry_after=_retry_after(exc.response.headers),
                kind="rate_limited" if status == 429 else "server_error" if status >= 500 else "other",
            )
        # A reply the SDK could not make sense of (bad JSON, wrong shape): as flaky as a 5xx.
        return _Failure("invalid reply", None, str(exc), retryable=True, kind="invalid_reply")

    def _error(self, failure: _Failure, model: str, attempts: int) -> LMError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        detail = _one_line(failure.detail, self._secrets)
        return LMError(
            f"{failure.reason} from {self.endpoint_for(model)} (model {model}){tries}: {detail}",
            status=failure.status,
            endpoint=self.endpoint_for(model),
            model=model,
            attempts=attempts,
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number `attempt`: the server's Retry-After if given (plus a little
        jitter so clients do not return in lockstep), else exponential backoff with jitter."""
        if retry_after is not None:
            return retry_after + self._rng.uniform(0, 0.1 * retry_after + 0.05)
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)


def _valid_entry(value: Any) -> bool:
    """A cache row we can trust; anything else is treated as a miss and overwritten."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("text"), str)
        and isinstance(value.get("finish_reason"), str)
        and isinstance(value.get("prompt_tokens"), int)
        and isinstance(value.get("completion_tokens"), int)
    )
