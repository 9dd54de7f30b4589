"""A flaky or leaky model server, seen through the LM client and a whole `tune` run.

A 200 that is not a chat completion is retried like a 5xx and counted; a server that echoes the
Authorization header must not get the key (or the GitHub token) into the cache, the report or the
terminal.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakes import rule_task
from fakes.openai_server import FakeOpenAI, Reply

from gepa_action.cache import ResponseCache
from gepa_action.cli import main
from gepa_action.lm.client import LMClient, LMError

KEY = "sk-test-EchoedKEYmustNotLeak0123456789"
GITHUB_TOKEN = "ghs_EchoedTokenMustNotLeak987654321"
HTML_PAGE = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"


def ask(lm: LMClient, text: str = "hello") -> Any:
    async def go() -> Any:
        async with lm:
            return await lm.complete("fake-model", [{"role": "user", "content": text}])

    return asyncio.run(go())


def client(config: Any, cache: ResponseCache | None = None, **kwargs: Any) -> LMClient:
    return LMClient(config, api_key=KEY, base_url=None, cache=cache, backoff_base=0.01, **kwargs)


@pytest.mark.parametrize("reply", [
    Reply(body=HTML_PAGE, content_type="text/html"),
    Reply(body=HTML_PAGE),  # HTML that claims to be JSON: the SDK's json.loads fails
    Reply(body={"garbled": True}),
    Reply(body={"choices": []}),
    Reply(body="null"),
], ids=["html", "html-as-json", "garbled", "no-choices", "null"])
def test_a_200_that_is_not_a_chat_completion_is_retried_and_counted(openai_server, lm_config, reply):
    openai_server.queue(reply)
    lm = client(lm_config())
    answer = ask(lm)
    assert answer.text == "echo: hello" and answer.retries == ("invalid_reply",)
    assert openai_server.attempts == 2
    usage = lm.usage.to_dict()
    assert usage["retries"] == 1 and usage["retries_by_kind"] == {"invalid_reply": 1}
    assert "1 retry (1 invalid_reply)" in lm.usage.summary()


def test_garbage_every_time_fails_after_the_retries_with_one_line_naming_the_endpoint(openai_server, lm_config):
    openai_server.responder = lambda body: Reply(body={"garbled": True})
    with pytest.raises(LMError) as failed:
        ask(client(lm_config(max_retries=2)))
    message = str(failed.value)
    assert openai_server.attempts == 3 and failed.value.attempts == 3
    assert "\n" not in message and f"{openai_server.url}/chat/completions" in message
    assert message.startswith("invalid reply from ") and "after 3 attempts" in message and "garbled" in message


def test_an_answer_with_a_lone_surrogate_is_cached_and_written_out_as_text(openai_server, lm_config, tmp_path):
    """`"\\ud800"` is valid JSON but not text: passed on as it came, it crashed the cache write (and, with
    --no-cache, the terminal output of `eval`). It arrives as U+FFFD, like any undecodable byte."""
    openai_server.responder = lambda body: "billing \ud800 \udfff!"
    openai_server.queue(Reply(body={"choices": [{"message": {"content": "x"}, "finish_reason": "stop\ud83d"}],
                                    "usage": {}}))
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        odd_reason = ask(client(lm_config(), cache), "first")
        first = ask(client(lm_config(), cache))
        again = ask(client(lm_config(), cache))
    assert odd_reason.finish_reason == "stop\ufffd"
    assert first.text == again.text == "billing \ufffd \ufffd!" and again.cached and not first.cached
    assert openai_server.attempts == 2


def test_an_echoed_key_and_token_are_redacted_before_the_cache_and_the_caller(openai_server, lm_config, tmp_path):
    openai_server.echo_headers("authorization")
    path = tmp_path / "cache.sqlite3"
    with ResponseCache(path) as cache:
        answer = ask(client(lm_config(), cache, secrets=(GITHUB_TOKEN,)), f"my token is {GITHUB_TOKEN}")
    assert openai_server.headers[0]["authorization"] == f"Bearer {KEY}"  # the server did see it...
    assert KEY not in answer.text and GITHUB_TOKEN not in answer.text  # ...the caller does not
    assert answer.text == "echo: my token is [redacted] (request headers: authorization: Bearer [redacted])"
    rows = sqlite3.connect(path).execute("SELECT value FROM responses").fetchall()
    assert rows and not any(KEY in v or GITHUB_TOKEN in v for (v,) in rows)


def test_a_cache_written_before_redaction_does_not_hand_out_the_key(openai_server, lm_config, tmp_path):
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        openai_server.responder = lambda body: f"leaked {KEY}"
        first = ask(client(lm_config(), cache))
        # Simulate an old entry: write the key into the cached row directly.
        key = next(iter(cache._connection().execute("SELECT key FROM responses").fetchone()))
        cache.put(key, {"text": f"leaked {KEY}", "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 2})
        again = ask(client(lm_config(), cache))
    assert first.text == again.text == "leaked [redacted]" and again.cached


def test_short_placeholder_keys_are_not_redacted(openai_server, lm_config):
    """A keyless local server gets the placeholder "unused": replacing it in answers would corrupt them."""
    openai_server.responder = lambda body: "the x key is unused"
    lm = LMClient(lm_config(), api_key="unused", base_url=None, cache=None)
    assert ask(lm).text == "the x key is unused"


# -- a whole run ----------------------------------------------------------------------------------------


def tune(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["-C", str(root), "tune", *args], env=env, catch_exceptions=False)


def test_a_tune_run_on_a_flaky_server_reports_its_retries_by_kind_and_ends_identical(tmp_path):
    whole, flaky = tmp_path / "whole", tmp_path / "flaky"
    with FakeOpenAI(responder=rule_task.responder()) as server:
        rule_task.write_workspace(whole, server.url, budget=80)
        reference = json.loads(tune(whole, "--json").stdout)["tasks"][0]
    calls = 0
    inner = rule_task.responder()

    def flaky_answer(body: dict[str, Any]) -> Reply:
        nonlocal calls
        calls += 1
        if calls % 5 == 1:
            return Reply(body=HTML_PAGE, content_type="text/html")
        if calls % 5 == 3:
            return Reply(status=503, text="overloaded")
        return inner(body)

    with FakeOpenAI(responder=flaky_answer) as server:
        rule_task.write_workspace(flaky, server.url, budget=80)
        (flaky / "gepa.yaml").write_text((flaky / "gepa.yaml").read_text().replace("max_retries: 2", "max_retries: 4"))
        result = tune(flaky)
    assert result.exit_code == 0, result.output
    run = next((flaky / ".gepa/runs").iterdir())
    task = json.loads((run / "report.json").read_text())["tasks"][0]
    kinds = task["usage"]["retries_by_kind"]
    assert kinds.get("invalid_reply", 0) >= 1 and kinds.get("server_error", 0) >= 1
    assert task["usage"]["retries"] == sum(kinds.values())
    shown = f"{task['usage']['retries']} retries ("
    assert shown in result.stdout, result.stdout  # the summary line
    assert shown in (run / "report.md").read_text()
    assert task["scores"] == reference["scores"] and task["best"] == reference["best"]
    assert task["usage"]["metric_calls"] <= 80


def test_an_echoing_server_leaks_nothing_into_run_files_or_output(tmp_path):
    with FakeOpenAI(responder=rule_task.responder()) as server:
        server.echo_headers("authorization")
        rule_task.write_workspace(tmp_path, server.url, budget=40)
        config = tmp_path / "gepa.yaml"
        config.write_text(config.read_text().replace("lm:\n", "lm:\n  api_key_env: GEPA_ECHO_KEY\n"))
        result = tune(tmp_path, env={"GEPA_ECHO_KEY": KEY, "GITHUB_TOKEN": GITHUB_TOKEN})
        assert any(h.get("authorization") == f"Bearer {KEY}" for h in server.headers)
    assert KEY not in result.output and GITHUB_TOKEN not in result.output
    gepa = tmp_path / ".gepa"
    files = [p for p in gepa.rglob("*") if p.is_file()]
    assert any(p.name == "report.md" for p in files) and any(p.suffix == ".sqlite3" for p in files)
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data and GITHUB_TOKEN.encode() not in data, path
    assert "[redacted]" in (next((gepa / "runs").iterdir()) / "events.jsonl").read_text()


def test_negative_token_counts_from_a_broken_server_cost_nothing_back(openai_server, lm_config):
    body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": -1000, "completion_tokens": -5}}
    openai_server.queue(Reply(body=body))
    answer = ask(client(lm_config()))
    assert answer.text == "ok" and answer.prompt_tokens == 0 and answer.completion_tokens == 0
