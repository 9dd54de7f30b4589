"""action.yml in `mode: watch`: its inputs reach `gepa-tune watch --issue` as the right arguments, tune-only
inputs stay out, and an unknown mode is one `::error` line with exit 2 (the script runs under bash as the
runner runs it, against a stand-in `gepa-tune`, with the helpers of test_action_yml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_action_yml import ACTION, _run_step, _substitute, run_script


def test_watch_mode_runs_the_watch_with_its_inputs(tmp_path: Path) -> None:
    args = run_script(tmp_path, mode="watch", config="sub/gepa.yaml", tasks="triage", watch_tolerance="0.1",
                      watch_label="drift", tune_workflow="gepa-tune.yml", base_url="http://llm.internal/v1",
                      task_model="m-small", budget="120", branch="bot/prompts", title="ignored in watch mode")
    assert args == ["--config", "sub/gepa.yaml", "watch", "--issue", "--label", "drift", "--tolerance", "0.1",
                    "--tune-workflow", "gepa-tune.yml", "--base-url", "http://llm.internal/v1",
                    "--task-model", "m-small", "--", "triage"]


def test_watch_mode_defaults(tmp_path: Path) -> None:
    assert run_script(tmp_path, mode="watch") == ["watch", "--issue", "--label", "gepa-tune-drift"]
    assert ACTION["inputs"]["mode"]["default"] == "tune"


def test_an_unknown_mode_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    step = _run_step()
    env = {k: _substitute(str(v), {"mode": "wacth"}) for k, v in step["env"].items()}
    env.update({"RUNNER_TEMP": str(tmp_path), "PATH": "/usr/bin:/bin"})
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env,
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == ["::error title=gepa-tune::mode: 'wacth' is not a mode; set mode to tune "
                                        "(the default) or watch"]
