"""The click group's one error handler covers every command, nested groups included."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.workspace_factory import make_workspace

from gepa_action import hooks, workspace
from gepa_action.cli import main


def _boom(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_an_unforeseen_error_in_a_nested_command_is_one_line(tmp_path: Path, monkeypatch) -> None:
    make_workspace(tmp_path)
    monkeypatch.delenv("GEPA_DEBUG", raising=False)
    monkeypatch.setattr(hooks, "affected_tasks", _boom)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "hook", "eval", "prompts/system.j2"])
    assert result.exit_code == 1
    assert result.stderr == ("error: unexpected RuntimeError: boom second line; rerun with GEPA_DEBUG=1 for the "
                             "traceback and report it if it is a bug\n")
    assert "Traceback" not in result.output


def test_gepa_debug_lets_the_traceback_through(tmp_path: Path, monkeypatch) -> None:
    make_workspace(tmp_path)
    monkeypatch.setenv("GEPA_DEBUG", "1")
    monkeypatch.setattr(hooks, "affected_tasks", _boom)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "hook", "eval", "prompts/system.j2"])
    assert isinstance(result.exception, RuntimeError)


@pytest.mark.parametrize("args", [["check"], ["eval"], ["hook", "check", "prompts/system.j2"]])
def test_ctrl_c_in_any_command_is_exit_130_with_one_line(tmp_path: Path, monkeypatch, args: list[str]) -> None:
    make_workspace(tmp_path)
    monkeypatch.setattr(workspace, "load_workspace", _interrupt)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), *args])
    assert result.exit_code == 130
    assert result.stderr == "\ninterrupted: answers received so far are kept in the response cache\n"
