"""The model client, driven through the real openai SDK over HTTP against the fake server."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fakes.openai_server import Reply

from gepa_action.cache import ResponseCache, cache_key
from gepa_action.config import LMConfig, Price
from gepa_action.errors import InputError, RunError
from gepa_action.lm.client import (
    AdaptiveLimiter,
    Completion,
    LMClient,
    LMError,
    _retry_after,
    resolve_endpoint,
)

KEY = "sk-test-Zq81KfakeKEYdoNotUse0123456789"
REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(config: LMConfig, cache: ResponseCache | None = None, api_key: str | None = KEY) -> LMClient:
    """A client with tiny backoffs, so retry tests take milliseconds (Retry-After still rules)."""
    return LMClient(config, api_key=api_key, base_url=None, cache=cache, backoff_base=0.01)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def complete_all(lm: LMClient, prompts: list[str], **kwargs: Any) -> list[Completion]:
    async with lm:
        return list(await asyncio.gather(*(lm.complete("fake-model", user(p), **kwargs) for p in prompts)))


# -- a plain completion ----------------------------------------------------------------------------------


def test_completion_reports_text_tokens_and_cost(openai_server, lm_config):
    config = lm_config(prices={"fake-model": Price(input=2.0, output=10.0)}, max_tokens=50)
    lm = client(config)
    [answer] = run(complete_all(lm, ["hello there world"]))

    assert answer == Completion(
        text="echo: hello there world",
        finish_reason="stop",
        truncated=False,
        prompt_tokens=5,  # "Be brief." + "hello there world", counted in words by the fake
        completion_tokens=4,
        cached=False,
        model="fake-model",
    )
    usage = lm.usage.to_dict()
    assert usage["requests"] == 1 and usage["cached"] == 0 and usage["retries"] == 0
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 4)
    assert usage["cost_usd"] == pytest.approx((5 * 2.0 + 4 * 10.0) / 1e6)
    assert lm.usage.total_cost() == pytest.approx(usage["cost_usd"])
    assert usage["models"]["fake-model"]["requests"] == 1
    assert usage["unpriced_models"] == []

    [sent] = openai_server.requests
    assert sent["model"] == "fake-model" and sent["temperature"] == 0.0 and sent["max_tokens"] == 50
    assert openai_server.headers[0]["authorization"] == f"Bearer {KEY}"


def test_unpriced_model_is_listed_not_priced_at_zero(openai_server, lm_config):
    lm = client(lm_config())
    run(complete_all(lm, ["x"]))
    assert lm.usage.to_dict()["unpriced_models"] == ["fake-model"]
    assert "unpriced: fake-model" in lm.usage.summary()


def test_none_content_becomes_empty_text(openai_server, lm_config):
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3},
    }
    openai_server.queue(Reply(body=body))
    [answer] = run(complete_all(client(lm_config()), ["x"]))
    assert answer.text == "" and answer.finish_reason == "stop"


def test_truncated_answer_is_flagged_and_cached(openai_server, lm_config, tmp_path):
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        # The fake honours max_tokens like a real server: 3 words, then finish_reason "length".
        [cut] = run(complete_all(client(lm_config(), cache), ["one two three four five"], max_tokens=3))
        assert cut.truncated and cut.finish_reason == "length" and cut.text == "echo: one two"
        [again] = run(complete_all(client(lm_config(), cache), ["one two three four five"], max_tokens=3))
    assert again.cached and again.truncated and again.text == cut.text
    assert openai_server.attempts == 1


# -- cache -----------------------------------------------------------------------------------------------


def test_second_identical_run_is_served_from_cache(openai_server, lm_config, tmp_path):
    prompts = [f"ticket {i}" for i in range(5)]
    path = tmp_path / ".gepa" / "cache.sqlite3"  # parent dirs are created
    with ResponseCache(path) as cache:
        first = run(complete_all(client(lm_config(), cache), prompts))
    assert openai_server.attempts == 5

    openai_server.reset()
    with ResponseCache(path) as cache:  # a new process would reopen the file like this
        lm = client(lm_config(), cache)
        second = run(complete_all(lm, prompts))

    assert openai_server.attempts == 0
    assert [c.text for c in second] == [c.text for c in first]
    assert all(c.cached for c in second) and not any(c.cached for c in first)
    usage = lm.usage.to_dict()
    assert (usage["requests"], usage["cached"], usage["cost_usd"]) == (0, 5, 0.0)
    assert usage["prompt_tokens"] == usage["completion_tokens"] == 0


def test_cache_holds_no_api_key(openai_server, lm_config, tmp_path):
    path = tmp_path / "c.sqlite3"
    with ResponseCache(path) as cache:
        run(complete_all(client(lm_config(), cache), ["a", "b"]))
    assert KEY.encode() not in path.read_bytes()


def test_sample_index_keys_the_cache_only_above_temperature_zero(openai_server, lm_config, tmp_path):
    async def samples(lm: LMClient, temperature: float) -> list[Completion]:
        async with lm:
            return [await lm.complete("fake-model", user("same"), temperature=temperature, sample=i) for i in range(3)]

    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        cold = run(samples(client(lm_config(), cache), 0.0))
        assert openai_server.attempts == 1
        assert [c.cached for c in cold] == [False, True, True]

        run(samples(client(lm_config(), cache), 0.7))
        assert openai_server.attempts == 4  # three distinct draws at temperature 0.7

    common = {"base_url": "http://h/v1", "model": "m", "messages": user("x"), "max_tokens": 9}
    assert cache_key(**common, temperature=0, sample=0) == cache_key(**common, temperature=0, sample=5)
    assert cache_key(**common, temperature=1, sample=0) != cache_key(**common, temperature=1, sample=5)


def test_cache_key_is_canonical_and_covers_the_request():
    base = {"base_url": "http://h/v1", "model": "m", "temperature": 0.0, "max_tokens": 9, "sample": 0}
    key = cache_key(messages=[{"role": "user", "content": "héllo"}], **base)
    assert len(key) == 64 and key == cache_key(messages=[{"content": "héllo", "role": "user"}], **base)
    assert key != cache_key(messages=[{"role": "user", "content": "hello"}], **base)
    assert key != cache_key(messages=[{"role": "user", "content": "héllo"}], **{**base, "model": "n"})
    assert key != cache_key(messages=[{"role": "user", "content": "héllo"}], **{**base, "max_tokens": 8})
    assert key != cache_key(messages=[{"role": "user", "content": "héllo"}], **base, extra={"seed": 1})


def test_no_cache_means_every_call_goes_to_the_server(openai_server, lm_config):
    lm = client(lm_config(), cache=None)
    run(complete_all(lm, ["same", "same", "same"]))
    assert openai_server.attempts == 3
    assert lm.usage.to_dict()["requests"] == 3


def test_identical_concurrent_requests_are_paid_once(openai_server, lm_config, tmp_path):
    openai_server.delay = 0.05
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        lm = client(lm_config(), cache)
        answers = run(complete_all(lm, ["same"] * 6))
    assert openai_server.attempts == 1
    assert sum(not c.cached for c in answers) == 1
    assert lm.usage.to_dict()["cached"] == 5


def test_cache_survives_concurrent_writers(tmp_path):
    path = tmp_path / "c.sqlite3"
    writer = (
        "import sys; from pathlib import Path; from gepa_action.cache import ResponseCache\n"
        "c = ResponseCache(Path(sys.argv[1]))\n"
        "for i in range(200): c.put(f'proc-{i}', {'i': i, 'text': 'é' * 50})\n"
        "c.close()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], cwd=REPO)
    shared = ResponseCache(path)

    def put_many(cache: ResponseCache, prefix: str) -> None:
        for i in range(200):
            cache.put(f"{prefix}-{i}", {"i": i, "text": "é" * 50})

    own = ResponseCache(path)  # a second connection, as another process would have
    threads = [
        threading.Thread(target=put_many, args=(shared, "a")),
        threading.Thread(target=put_many, args=(shared, "b")),
        threading.Thread(target=put_many, args=(own, "c")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=30) == 0
    own.close()

    assert len(shared) == 800
    for prefix in ("proc", "a", "b", "c"):
        for i in range(200):
            assert shared.get(f"{prefix}-{i}") == {"i": i, "text": "é" * 50}
    assert shared.get("missing") is None
    shared.close()


def test_fully_cached_run_does_not_import_openai(openai_server, lm_config, tmp_path):
    path = tmp_path / "c.sqlite3"
    config = lm_config()
    with ResponseCache(path) as cache:
        run(complete_all(client(config, cache), ["a", "b", "c"]))
    openai_server.reset()

    replay = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from gepa_action.cache import ResponseCache\n"
        "from gepa_action.lm.client import LMClient\n"
        "from gepa_action.config import LMConfig\n"
        "config = LMConfig(base_url=sys.argv[2])\n"
        "async def main():\n"
        "    cache = ResponseCache(Path(sys.argv[1]))\n"
        "    async with LMClient(config, api_key=None, base_url=None, cache=cache) as lm:\n"
        "        msgs = [[{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': p}]\n"
        "                for p in 'abc']\n"
        "        out = [await lm.complete('fake-model', m) for m in msgs]\n"
        "    return [c.cached for c in out], lm.usage.to_dict()['cached']\n"
        "cached, count = asyncio.run(main())\n"
        "print(json.dumps({'cached': cached, 'count': count, 'openai': 'openai' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", replay, str(path), openai_server.url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {"cached": [True, True, True], "count": 3, "openai": False}
    assert openai_server.attempts == 0


# -- concurrency -----------------------------------------------------------------------------------------


def test_concurrency_is_bounded(openai_server, lm_config):
    openai_server.delay = 0.03
    lm = client(lm_config(concurrency=4))
    answers = run(complete_all(lm, [f"q{i}" for i in range(40)]))
    assert len(answers) == 40 and openai_server.attempts == 40
    assert 1 < openai_server.max_in_flight <= 4


def test_limiter_halves_once_per_generation_and_creeps_back():
    async def scenario() -> list[int]:
        limiter = AdaptiveLimiter(8)
        seen = []
        gens = [await limiter.acquire() for _ in range(3)]  # three requests in flight
        for gen in gens:  # ...all come back 429: one cut, not three
            limiter.release()
            limiter.rate_limited(gen)
        seen.append(limiter.limit)
        limiter.rate_limited(await limiter.acquire())
        limiter.release()
        seen.append(limiter.limit)
        for _ in range(2):
            limiter.rate_limited(await limiter.acquire())
            limiter.release()
        seen.append(limiter.limit)  # never below 1
        for _ in range(1 + 2 + 3):  # a run of `limit` successes earns one more slot, each time
            await limiter.acquire()
            limiter.release()
            limiter.succeeded()
        seen.append(limiter.limit)
        return seen

    assert run(scenario()) == [4, 2, 1, 4]


def test_limiter_wait_is_first_come_first_served_and_cancellable():
    async def scenario() -> tuple[list[int], int]:
        limiter = AdaptiveLimiter(1)
        order: list[int] = []
        await limiter.acquire()

        async def worker(i: int) -> None:
            await limiter.acquire()
            order.append(i)
            limiter.release()

        tasks = [asyncio.create_task(worker(i)) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        limiter.release()
        await asyncio.gather(*tasks, return_exceptions=True)
        return order, limiter.in_flight

    assert run(scenario()) == ([0, 2, 3], 0)


# -- retries and failures -----------------------------------------------------------------------------


def test_429_waits_for_retry_after_and_lowers_the_limit(openai_server, lm_config):
    openai_server.fail_next(1, status=429, headers={"Retry-After": "1"})
    lm = client(lm_config(concurrency=4))
    start = time.monotonic()
    [answer] = run(complete_all(lm, ["hi"]))
    elapsed = time.monotonic() - start

    assert answer.text == "echo: hi"
    assert elapsed >= 1.0
    assert openai_server.attempts == 2
    assert lm.limiter.limit == 2
    usage = lm.usage.to_dict()
    assert usage["retries"] == 1 and usage["requests"] == 1


def test_retry_after_ms_header_is_honoured(openai_server, lm_config):
    openai_server.fail_next(1, status=429, headers={"retry-after-ms": "300"})
    start = time.monotonic()
    run(complete_all(client(lm_config()), ["hi"]))
    assert time.monotonic() - start >= 0.3


def test_retry_after_parsing():
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert _retry_after({"retry-after": "86400"}) == 120.0  # capped
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after({"retry-after": later}) or 0) <= 30


def test_server_errors_are_retried(openai_server, lm_config):
    openai_server.fail_next(2, status=500)
    lm = client(lm_config(max_retries=2))
    [answer] = run(complete_all(lm, ["hi"]))
    assert answer.text == "echo: hi"
    assert openai_server.attempts == 3
    assert lm.usage.to_dict()["retries"] == 2
    assert lm.limiter.limit == 4  # only 429 slows the client down


def test_persistent_server_error_names_status_endpoint_and_model(openai_server, lm_config):
    openai_server.fail_next(3, status=503, text="overloaded, try later")
    with pytest.raises(LMError) as info:
        run(complete_all(client(lm_config(max_retries=2)), ["hi"]))
    message = str(info.value)
    assert message == (
        f"HTTP 503 from {openai_server.url}/chat/completions (model fake-model) after 3 attempts: overloaded, try later"
    )
    assert info.value.status == 503 and info.value.attempts == 3


def test_timeout_is_retried_then_fails_clearly(openai_server, lm_config):
    openai_server.delay = 1.0
    lm = client(lm_config(timeout=0.25, max_retries=1))
    start = time.monotonic()
    with pytest.raises(LMError) as info:
        run(complete_all(lm, ["slow"]))
    assert time.monotonic() - start < 0.95  # gave up on its own timeouts, not the server's delay
    message = str(info.value)
    assert message.startswith(f"timeout from {openai_server.url}/chat/completions (model fake-model)")
    assert "after 2 attempts" in message
    assert openai_server.attempts == 2
    assert isinstance(info.value, RunError) and info.value.exit_code == 1


def test_401_fails_at_once_without_leaking_the_key(openai_server, lm_config):
    # A careless server echoes the key back; it must not reach our message.
    openai_server.fail_next(1, status=401, text=f"Incorrect API key provided: {KEY}.")
    lm = client(lm_config(max_retries=5))
    with pytest.raises(LMError) as info:
        run(complete_all(lm, ["hi"]))
    message = str(info.value)
    assert openai_server.attempts == 1
    assert "HTTP 401" in message and f"{openai_server.url}/chat/completions" in message
    assert "fake-model" in message
    assert KEY not in message and "[redacted]" in message
    assert "\n" not in message
    assert lm.usage.to_dict()["retries"] == 0


def test_connection_refused_is_a_connection_error(lm_config):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    lm = client(lm_config(base_url=url, max_retries=1))
    with pytest.raises(LMError) as info:
        run(complete_all(lm, ["hi"]))
    assert str(info.value).startswith(f"connection error from {url}/chat/completions (model fake-model)")


def test_errors_are_never_cached(openai_server, lm_config, tmp_path):
    openai_server.fail_next(1, status=400, text="bad request")
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        with pytest.raises(LMError):
            run(complete_all(client(lm_config(), cache), ["hi"]))
        [answer] = run(complete_all(client(lm_config(), cache), ["hi"]))
    assert not answer.cached and answer.text == "echo: hi"


# -- endpoint and key --------------------------------------------------------------------------------------


def test_resolve_endpoint_reads_the_named_variable():
    config = LMConfig(api_key_env="MY_KEY")
    assert resolve_endpoint(config, {"MY_KEY": "k", "OPENAI_BASE_URL": "http://h/v1"}) == ("http://h/v1", "k")
    assert resolve_endpoint(config, {"OPENAI_API_KEY": "other"}) == (None, None)
    assert resolve_endpoint(LMConfig(base_url="http://c/v1"), {"OPENAI_BASE_URL": "http://e/v1"})[0] == ("http://c/v1")


def test_missing_key_for_the_default_endpoint_is_an_input_error():
    lm = LMClient(LMConfig(api_key_env="GEPA_NOPE"), api_key=None, base_url=None, cache=None)
    with pytest.raises(InputError) as info:
        run(complete_all(lm, ["hi"]))
    assert info.value.exit_code == 2
    assert str(info.value).startswith("gepa.yaml: lm.api_key_env: no API key: the environment variable GEPA_NOPE")


def test_local_server_needs_no_key(openai_server, lm_config):
    [answer] = run(complete_all(client(lm_config(), api_key=None), ["hi"]))
    assert answer.text == "echo: hi"
    assert openai_server.headers[0]["authorization"] == "Bearer unused"


def test_one_client_can_serve_two_event_loops(openai_server, lm_config):
    # e.g. `gepa-tune eval` then `tune` in one process: close it in each loop, usage keeps adding up.
    lm = client(lm_config())
    assert [c.text for c in run(complete_all(lm, ["one"]))] == ["echo: one"]
    assert [c.text for c in run(complete_all(lm, ["two"]))] == ["echo: two"]
    assert lm.usage.to_dict()["requests"] == 2


def test_unusable_cache_file_is_a_run_error(tmp_path):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(RunError, match="response cache .* delete the file or run with --no-cache"):
        ResponseCache(path)
