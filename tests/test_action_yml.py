"""action.yml: its inputs reach `gepa-tune action` as the right arguments, no input is pasted into a
script (script injection), and every output it declares is one the CLI writes.

The composite step's script is run with bash exactly as the runner runs it (`bash --noprofile --norc -eo
pipefail`), with the runner's `${{ inputs.* }}` substitution done here, against a stand-in `gepa-tune`
that records its arguments."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPR = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def _run_step() -> dict:
    [step] = [s for s in ACTION["runs"]["steps"] if s.get("id") == "run"]
    return step


def _substitute(value: str, inputs: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr.startswith("inputs."):
            name = expr.removeprefix("inputs.")
            return inputs.get(name, str(ACTION["inputs"][name].get("default", "")))
        assert expr == "github.token", expr
        return "ghs_workflow_token"

    return EXPR.sub(one, value)


def run_script(tmp_path: Path, **inputs: str) -> list[str]:
    """The arguments `gepa-tune` receives for these inputs (names with dashes as in a workflow)."""
    inputs = {k.replace("_", "-"): v for k, v in inputs.items()}
    step = _run_step()
    venv_bin = tmp_path / "gepa-tune-venv" / "bin"
    venv_bin.mkdir(parents=True)
    record = tmp_path / "args.json"
    stub = venv_bin / "gepa-tune"
    stub.write_text(f'#!/usr/bin/env python3\nimport json, sys\njson.dump(sys.argv[1:], open("{record}", "w"))\n')
    stub.chmod(0o755)
    env = {k: _substitute(str(v), inputs) for k, v in step["env"].items()}
    env.update({"RUNNER_TEMP": str(tmp_path), "PATH": "/usr/bin:/bin"})
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env,
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(record.read_text())


def test_defaults_run_a_plain_action(tmp_path: Path) -> None:
    assert run_script(tmp_path) == ["action", "--seed", "0", "--min-improvement", "ci"]


def test_every_input_becomes_its_option(tmp_path: Path) -> None:
    args = run_script(tmp_path, config="sub/gepa.yaml", tasks="triage, summarize", budget="120", seed="3",
                      base_url="http://llm.internal/v1", task_model="m-small", reflection_model="m-big",
                      branch="bot/prompts", base="develop", labels="prompts,ai", draft="true",
                      min_improvement="mean:0.05", commit_message="tune: weekly", title="Weekly prompts")
    assert args == ["--config", "sub/gepa.yaml", "action", "--seed", "3", "--min-improvement", "mean:0.05",
                    "--budget", "120", "--base-url", "http://llm.internal/v1", "--task-model", "m-small",
                    "--reflection-model", "m-big", "--branch", "bot/prompts", "--base", "develop",
                    "--label", "prompts,ai", "--draft", "--commit-message", "tune: weekly",
                    "--title", "Weekly prompts", "--", "triage, summarize"]


def test_a_matrix_job_tunes_only_and_the_combine_job_takes_the_run_folders(tmp_path: Path) -> None:
    assert run_script(tmp_path, propose="false", tasks="route") == [
        "action", "--seed", "0", "--min-improvement", "ci", "--no-propose", "--", "route"]
    combine = run_script(tmp_path / "c", from_runs="/tmp/runs a\n\n/tmp/runs b\n", budget="9", seed="3",
                         propose="false", labels="prompts")
    assert combine == ["action", "--min-improvement", "ci", "--from-runs", "/tmp/runs a", "--from-runs",
                       "/tmp/runs b", "--label", "prompts"], "tuning inputs belong to the tune jobs"


def test_hostile_input_stays_data(tmp_path: Path) -> None:
    evil = '"; touch pwned; echo "$(touch pwned2)` `'
    args = run_script(tmp_path, title=evil, tasks="*")
    assert args[args.index("--title") + 1] == evil and args[-1] == "*"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_no_expression_is_pasted_into_a_script() -> None:
    for step in ACTION["runs"]["steps"]:
        assert not EXPR.search(step.get("run", "")), f"step '{step.get('name')}' expands an expression in run:"


def test_every_input_is_used_and_every_output_is_written(tmp_path: Path) -> None:
    text = (ROOT / "action.yml").read_text()
    for name in ACTION["inputs"]:
        assert re.search(rf"inputs\.{re.escape(name)}\b", text), f"input {name!r} is declared but never used"
    from gepa_action.action import ActionResult
    from gepa_action.watch_flow import WatchOutcome

    written = set(ActionResult("none", False, "").outputs()) | set(WatchOutcome().outputs())
    for name, spec in ACTION["outputs"].items():
        assert spec["value"] == f"${{{{ steps.run.outputs.{name} }}}}" and name in written


def test_the_matrix_workflow_tunes_per_task_and_combines_in_one_job() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/gepa-tune-matrix.yml").read_text())
    tune, combine = workflow["jobs"]["tune"], workflow["jobs"]["combine"]
    assert tune["permissions"] == {"contents": "read"} and tune["strategy"]["fail-fast"] is False
    [action] = [s for s in tune["steps"] if s.get("uses") == "./"]
    assert action["with"]["propose"] == "false" and action["with"]["tasks"] == "${{ matrix.task }}"
    [upload] = [s for s in tune["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()" and "${{ matrix.task }}" in upload["with"]["name"]
    assert combine["needs"] == "tune" and "!cancelled()" in combine["if"]
    assert combine["permissions"] == {"contents": "write", "pull-requests": "write"}
    [download] = [s for s in combine["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    [propose] = [s for s in combine["steps"] if s.get("uses") == "./"]
    assert propose["with"]["from-runs"] == download["with"]["path"]


@pytest.mark.parametrize("path", [".github/workflows/gepa-tune.yml"])
def test_the_example_workflow_uses_the_action_with_the_permissions_it_needs(path: str) -> None:
    workflow = yaml.safe_load((ROOT / path).read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    steps = workflow["jobs"]["tune"]["steps"]
    assert any(s.get("uses", "").startswith("actions/cache") and ".gepa/cache.sqlite3" in s["with"]["path"]
               for s in steps)
    assert any(s.get("uses") == "./" for s in steps)


# -- supply chain ---------------------------------------------------------------------------------------

WORKFLOW_FILES = [ROOT / "action.yml", *sorted((ROOT / ".github/workflows").glob("*.yml")),
                  ROOT / "gepa_action/scaffold/workflow.yml"]
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", re.M)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_third_party_action_is_pinned_to_a_commit_with_its_tag(path: Path) -> None:
    """A tag can be moved to other code; a full commit SHA cannot. The tag stays readable in a comment."""
    found = USES.findall(path.read_text())
    assert found
    for ref, rest in found:
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref} is not pinned to a commit"
        assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", rest), f"{path.name}: {ref} has no `# vX.Y.Z` comment"


def test_checkouts_keep_no_credentials_and_the_action_gets_the_token() -> None:
    for path in WORKFLOW_FILES[1:]:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, path.name
                if step.get("uses") == "./" and step["with"].get("propose") != "false":  # tune-only: no push
                    assert step["with"]["github-token"] == "${{ secrets.GITHUB_TOKEN }}"
