"""lm/session.py: the one owner of a workspace's client, and the one place that decides `provider: local`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fakes.workspace_factory import GEPA_YAML, make_workspace

from gepa_action.cache import ResponseCache
from gepa_action.errors import RunError
from gepa_action.lm import local_model
from gepa_action.lm.session import CACHE_FILE, for_provider, open_client, with_client
from gepa_action.workspace import load_workspace


def test_a_failing_run_still_closes_the_client_and_keeps_what_it_paid_for(tmp_path: Path, openai_server) -> None:
    make_workspace(tmp_path, config=GEPA_YAML.replace("lm:\n", f"lm:\n  base_url: {openai_server.url}\n"))
    workspace = load_workspace(tmp_path / "gepa.yaml")
    seen = []

    async def work(lm):
        seen.append(lm)
        await lm.complete("test-model", [{"role": "user", "content": "hello"}])
        raise ValueError("the work broke after one paid answer")

    with pytest.raises(ValueError, match="one paid answer"):
        with_client(workspace, work)
    with pytest.raises(RunError, match="is closed"):
        len(seen[0].cache)  # closed by the session, not left to the garbage collector
    with ResponseCache(tmp_path / CACHE_FILE) as cache:
        assert len(cache) == 1  # the answer survived the failure: a re-run gets it for free
    assert len(openai_server.requests) == 1


def test_no_cache_means_no_cache_file(tmp_path: Path, openai_server) -> None:
    make_workspace(tmp_path, config=GEPA_YAML.replace("lm:\n", f"lm:\n  base_url: {openai_server.url}\n"))
    workspace = load_workspace(tmp_path / "gepa.yaml")

    async def work(lm):
        return (await lm.complete("test-model", [{"role": "user", "content": "hi"}])).text

    assert with_client(workspace, work, use_cache=False) == with_client(workspace, work, use_cache=False)
    assert len(openai_server.requests) == 2
    assert not (tmp_path / CACHE_FILE).exists()


def test_local_given_on_the_command_line_is_the_same_as_in_gepa_yaml_and_applies_once(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    plain = load_workspace(tmp_path / "gepa.yaml")
    by_flag = for_provider(plain, local=True)
    (tmp_path / "gepa.yaml").write_text(GEPA_YAML.replace("lm:\n", "lm:\n  provider: local\n"))
    by_config = load_workspace(tmp_path / "gepa.yaml")
    assert by_flag.lm == by_config.lm and by_flag.lm.task_model == local_model.TASK_MODEL.name
    assert [t.model for t in by_flag.tasks] == [t.model for t in by_config.tasks]
    assert for_provider(by_config, local=True).lm == by_config.lm  # `--local` on a local config changes nothing
    assert for_provider(plain) is plain  # another provider: untouched


def test_a_local_client_without_its_servers_is_refused(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    workspace = load_workspace(tmp_path / "gepa.yaml")
    local = dataclasses.replace(workspace, lm=dataclasses.replace(workspace.lm, provider="local"))
    with pytest.raises(RunError, match="local model servers are not running"):
        open_client(local, use_cache=False, routes=None)
