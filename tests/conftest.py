"""Shared pytest fixtures. Each fixture is small and documented; add new ones in their own section."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAI

from gepa_action.config import LMConfig

# -- model endpoint ------------------------------------------------------------------------------------


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """A running fake OpenAI-compatible server on 127.0.0.1 (echo responder, no delay).

    Tests script it by setting `server.responder` / `server.delay` or with `server.fail_next(...)`.
    """
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def lm_config(openai_server: FakeOpenAI) -> Callable[..., LMConfig]:
    """A factory for an `LMConfig` pointing at `openai_server`, with small test-friendly defaults.

    `lm_config()` or `lm_config(concurrency=2, timeout=0.5, ...)`: any LMConfig field can be overridden.
    """

    def make(**overrides: Any) -> LMConfig:
        fields: dict[str, Any] = {
            "base_url": openai_server.url,
            "api_key_env": "GEPA_TEST_API_KEY",
            "task_model": "fake-model",
            "concurrency": 4,
            "timeout": 5.0,
            "max_retries": 2,
        }
        fields.update(overrides)
        return LMConfig(**fields)

    return make


# -- the real local models -----------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`local_model` tests skip, with the reason shown, where the [local] extra is not installed (a
    developer's quick venv); `GEPA_TEST_REQUIRE_LOCAL=1` turns that skip back into the tests' own failure,
    for a CI that installed the extra and must not pass without it."""
    import importlib.util
    import os

    if importlib.util.find_spec("llama_cpp") is not None or os.environ.get("GEPA_TEST_REQUIRE_LOCAL") == "1":
        return
    skip = pytest.mark.skip(reason="needs the [local] extra and `gepa-tune install-local`")
    for item in items:
        if "local_model" in item.keywords:
            item.add_marker(skip)
