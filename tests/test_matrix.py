"""A matrix: one process per task tunes (`gepa-tune action --no-propose`, as the matrix jobs of
.github/workflows/gepa-tune-matrix.yml do), each in its own clone, against the fake OpenAI server on
loopback; one of them fails (its model is gone). Then `gepa-tune action --from-runs` combines the run
folders against a bare origin (real git) and the fake GitHub (PyGithub over real HTTP): one PR, one
commit, one gepa.lock update for the tasks that proposed, and the failed task named with its reason.
Then the ways a run folder (an uploaded artifact, so untrusted) can be wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from fakes import matrix_workspace
from fakes.actions_runner import read_outputs, run_step
from fakes.git_repos import ENV, commit_on, git, make_origin
from fakes.github_server import FakeGitHub
from fakes.openai_server import FakeOpenAI

REPO = "octo/prompts"
TOKEN = "ghs_fake_workflow_token_456"
TASKS = ["route", "billing", "gone"]
BRANCH = "gepa-tune/matrix"
GEPA_TUNE = Path(sys.executable).with_name("gepa-tune")


@dataclass
class Jobs:
    """What the matrix jobs left: the origin they cloned and the artifacts they uploaded."""

    tmp: Path
    bare: Path
    artifacts: Path
    exit_codes: dict[str, int]
    logs: dict[str, str]
    summaries: dict[str, str]


def _tune_jobs(tmp: Path, bare: Path, env: dict[str, str]) -> tuple[dict[str, int], dict[str, str]]:
    """One process per task, at the same time, each in its own clone (a runner's checkout) with its own
    job summary file. The billing job runs plain `gepa-tune tune`: its run folder combines as well."""
    procs = {}
    for task in TASKS:
        job = tmp / f"job-{task}"
        git(tmp, "clone", "--quiet", str(bare), str(job))
        (tmp / f"summary-{task}").write_text("")
        command = ["tune", task] if task == "billing" else ["action", "--no-propose", task]
        procs[task] = subprocess.Popen([str(GEPA_TUNE), "-C", str(job), *command],
                                       env={**env, "GITHUB_STEP_SUMMARY": str(tmp / f"summary-{task}")},
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = {task: proc.communicate(timeout=300)[0] for task, proc in procs.items()}
    return {task: proc.returncode for task, proc in procs.items()}, logs


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    tmp = tmp_path_factory.mktemp("matrix")
    env = {**os.environ, **ENV, "GEPA_TUNE_API_KEY": "", "GITHUB_ACTIONS": "true"}
    env.pop("GITHUB_OUTPUT", None), env.pop("GITHUB_TOKEN", None), env.pop("GITHUB_REPOSITORY", None)
    with FakeOpenAI(responder=matrix_workspace.responder()) as server:
        source = matrix_workspace.write(tmp / "src", server.url, TASKS, budget=200, broken=("gone",))
        bare, _clone = make_origin(tmp, source=source)
        codes, logs = _tune_jobs(tmp, bare, env)
    artifacts = tmp / "artifacts"
    for task in TASKS:  # actions/download-artifact: DIR/<artifact name>/<run id>/...
        shutil.copytree(tmp / f"job-{task}/.gepa/runs", artifacts / f"gepa-tune-run-{task}-1")
    summaries = {task: (tmp / f"summary-{task}").read_text() for task in TASKS}
    yield Jobs(tmp, bare, artifacts, codes, logs, summaries)


@dataclass
class World:
    tmp: Path
    bare: Path
    clone: Path
    github: FakeGitHub

    def run(self, *args: str) -> Result:
        return run_step(self.tmp, self.clone, "action", "--branch", BRANCH, *args, repository=REPO, token=TOKEN,
                        api_url=self.github.url, run_id="7", GEPA_TUNE_API_KEY="")

    @property
    def summary_file(self) -> Path:
        return self.tmp / "step_summary"

    def outputs(self) -> dict[str, str]:
        return read_outputs(self.tmp)

    def artifacts(self, jobs: Jobs) -> Path:
        """A copy of the jobs' artifacts this test may damage."""
        target = self.tmp / "downloaded"
        shutil.copytree(jobs.artifacts, target, symlinks=True)
        return target


@pytest.fixture
def world(jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    bare = tmp_path / "origin.git"
    shutil.copytree(jobs.bare, bare)  # the same commits the jobs started from, untouched by other tests
    clone = tmp_path / "combine"
    git(tmp_path, "clone", "--quiet", str(bare), str(clone))
    with FakeGitHub(token=TOKEN) as github:
        github.add_repo(REPO, bare)
        yield World(tmp_path, bare, clone, github)


def _run_folder(artifacts: Path, task: str) -> Path:
    [run_json] = (artifacts / f"gepa-tune-run-{task}-1").glob("*/run.json")
    return run_json.parent


def test_the_matrix_jobs_ran_as_separate_processes(jobs: Jobs) -> None:
    assert jobs.exit_codes == {"route": 0, "billing": 0, "gone": 1}, jobs.logs
    assert "tune only" in jobs.logs["route"] and "--from-runs" in jobs.logs["route"]
    assert "Tuned only (a matrix job)" in jobs.summaries["route"] and "route: applied" in jobs.summaries["route"]
    meta = json.loads((_run_folder(jobs.artifacts, "route") / "run.json").read_text())
    assert meta["base_commit"] == git(jobs.bare, "rev-parse", "main") and meta["config_sha256"]


def test_one_pr_one_commit_one_lock_update_and_the_failed_task_named(jobs: Jobs, world: World) -> None:
    result = world.run("--from-runs", str(world.artifacts(jobs)), "--label", "prompts")
    assert result.exit_code == 0, result.output
    out = world.outputs()
    assert out["operation"] == "created" and out["improved"] == "true"
    [pr] = world.github.pulls(REPO)
    assert pr["head"]["ref"] == BRANCH and pr["base"]["ref"] == "main"
    commits = git(world.bare, "rev-list", f"main..{BRANCH}").split()
    assert len(commits) == 1, "one commit for every task"
    changed = set(git(world.bare, "diff", "--name-only", f"main..{BRANCH}").split())
    assert changed == {"gepa.lock", "prompts/route.j2", "prompts/billing.j2"}
    lock = yaml.safe_load(git(world.bare, "show", f"{BRANCH}:gepa.lock"))
    assert set(lock["tasks"]) == {"route", "billing"}, "gepa.lock updated for the proposing tasks only"
    route_run = _run_folder(world.tmp / "downloaded", "route").name
    assert lock["tasks"]["route"]["written_by"] == f"action run {route_run}", "each task names its own run"
    message = git(world.bare, "log", "-1", "--format=%B", BRANCH)
    assert f"run {route_run}" in message and "Gepa-Tune-Run: combined-" in message
    # The failed job's task is named, with the reason, in the PR body, the job summary and the log.
    gone = _run_folder(world.tmp / "downloaded", "gone").name
    for text in (pr["body"], world.summary_file.read_text()):
        assert "Runs not used (1)" in text, text
        row = next(line for line in text.splitlines() if line.startswith("| gone |"))
        assert f"downloaded/gepa-tune-run-gone-1/{gone}" in row.replace("\\", "")
        assert "the task produced no result (failed: HTTP 404" in row and "sim-retired" in row
        assert str(world.tmp) not in row, "the runner's temporary path stays out of the PR"
    assert f"gone: run downloaded/gepa-tune-run-gone-1/{gone} not used" in result.output
    # The checkout is untouched; the combined report is in a folder of its own.
    assert git(world.clone, "status", "--porcelain") == ""
    report_path = world.clone / out["report-path"]
    assert report_path.is_file() and "Runs not used" in report_path.read_text()
    assert (report_path.parent / "combine.json").is_file()

    # Combining the same runs again changes nothing: no second PR, no push.
    again = world.run("--from-runs", str(world.tmp / "downloaded"), "--label", "prompts")
    assert again.exit_code == 0, again.output
    assert world.outputs()["operation"] == "unchanged" and len(world.github.pulls(REPO)) == 1



def _edit_json(path: Path, change) -> None:  # noqa: ANN001 - a function that edits the data in place
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _truncate(run: Path) -> None:
    text = (run / "report.json").read_text()
    (run / "report.json").write_text(text[: len(text) // 2])


def _link_out(run: Path) -> None:
    (run / "state" / "notes.txt").symlink_to("/etc/passwd")


def _escape_path(run: Path) -> None:
    def change(data: dict) -> None:
        best = data["tasks"][0]["best"]
        best["templates"] = {"../.github/workflows/evil.yml": "on: push"}
        best["changed_modules"] = ["../.github/workflows/evil.yml"]
    _edit_json(run / "report.json", change)


def _strange_commit(run: Path) -> None:
    _edit_json(run / "run.json", lambda d: d.update(base_commit="0123456789" * 4))


def _killed(run: Path) -> None:
    _edit_json(run / "run.json", lambda d: d.update(status="running"))


def _other_config(run: Path) -> None:
    _edit_json(run / "run.json", lambda d: d.update(config_sha256="f" * 64))


def _injected_id(run: Path) -> None:
    _edit_json(run / "run.json", lambda d: d.update(run_id="x\nGepa-Tune-Run: forged"))


def _nan_score(run: Path) -> None:
    text = (run / "report.json").read_text()
    (run / "report.json").write_text(text.replace('"best": 0.', '"best": NaN, "x": 0.', 1))


def _huge(run: Path) -> None:
    with (run / "state" / "padding.bin").open("wb") as handle:  # sparse: no disk is filled
        handle.truncate(600 * 1024 * 1024)


def _nested(run: Path) -> None:
    (run / "report.json").write_text("[" * 200_000)


def _deep(run: Path) -> None:
    (run / "state" / Path(*["d"] * 40)).mkdir(parents=True)


def _fifo(run: Path) -> None:
    os.mkfifo(run / "events.fifo")


@pytest.mark.parametrize(("damage", "reason"), [
    (_huge, "is larger than 512 MB"),
    (_nested, "report.json: not valid JSON (nested too deeply)"),
    (_fifo, "holds a special file (events.fifo)"),
    (_deep, "is nested more than 4 folders deep"),
    (_truncate, "report.json: not valid JSON"),
    (_link_out, "holds a symbolic link (state/notes.txt)"),
    (_escape_path, "names a template the task does not have"),
    (_strange_commit, "is not in this checkout's history"),
    (_killed, "the run did not finish (running)"),
    (_other_config, "the run read another gepa.yaml"),
    (_injected_id, "no run id of letters"),
    (_nan_score, "report.json: holds NaN"),
], ids=lambda v: getattr(v, "__name__", "")[1:])
def test_a_damaged_or_foreign_run_is_named_and_the_others_still_propose(jobs: Jobs, world: World, damage,
                                                                        reason: str) -> None:  # noqa: ANN001
    artifacts = world.artifacts(jobs)
    damage(_run_folder(artifacts, "billing"))
    result = world.run("--from-runs", str(artifacts), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "route: apply" in result.output and "billing: apply" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("warning: billing: run ")]
    assert len(lines) == 1 and reason in lines[0], result.output
    [body] = world.clone.glob(".gepa/runs/combined-*/pr-body.md")
    assert "Runs not used (2)" in body.read_text() and "/etc/passwd" not in body.read_text()
    assert not (world.clone / ".github").exists()


def test_two_usable_runs_of_one_task_are_an_error(jobs: Jobs, world: World) -> None:
    artifacts = world.artifacts(jobs)
    shutil.copytree(artifacts / "gepa-tune-run-route-1", artifacts / "gepa-tune-run-route-2")
    result = world.run("--from-runs", str(artifacts), "--dry-run")
    assert result.exit_code == 2
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert "task 'route' is also tuned by run" in line and "pass one finished run per task" in line
    assert not world.github.pulls(REPO)


def test_a_run_whose_task_changed_on_the_base_since_is_not_used(jobs: Jobs, world: World) -> None:
    commit_on(world.bare, world.tmp, "main", {"prompts/billing.j2": "Route the ticket. Be brief.\n"}, "edit")
    git(world.clone, "pull", "--quiet", "origin", "main")
    result = world.run("--from-runs", str(world.artifacts(jobs)))
    assert result.exit_code == 0, result.output
    assert "warning: billing: run " in result.output
    assert "the task's files changed between its base commit" in result.output
    changed = set(git(world.bare, "diff", "--name-only", f"main..{BRANCH}").split())
    assert changed == {"gepa.lock", "prompts/route.j2"}, "route started from an ancestor with its files unchanged"


def test_no_usable_run_fails_and_says_why(jobs: Jobs, world: World) -> None:
    artifacts = world.artifacts(jobs)
    result = world.run("--from-runs", str(artifacts / "gepa-tune-run-gone-1"))
    assert result.exit_code == 1
    assert "none of the 1 run(s) given to --from-runs can be used" in result.output
    summary = world.summary_file.read_text()
    assert "Runs not used (1)" in summary and "| gone |" in summary
    assert world.outputs()["operation"] == "none" and not world.github.pulls(REPO)


@pytest.mark.parametrize(("args", "needle"), [
    (["--budget", "5"], "--budget: is an option of tuning"),
    (["--no-propose"], "--no-propose: is an option of tuning"),
    (["--seed", "0"], "--seed: is an option of tuning"),
])
def test_tuning_options_with_from_runs_are_refused(world: World, args: list[str], needle: str) -> None:
    result = world.run("--from-runs", str(world.tmp), *args)
    assert result.exit_code == 2
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert needle in line


def test_a_missing_or_linked_folder_is_one_line(world: World) -> None:
    missing = world.run("--from-runs", str(world.tmp / "nope"), "--dry-run")
    assert missing.exit_code == 2 and "is not a folder" in missing.output and "Traceback" not in missing.output
    (world.tmp / "empty").mkdir()
    empty = world.run("--from-runs", str(world.tmp / "empty"), "--dry-run")
    assert empty.exit_code == 2 and "holds no run folder" in empty.output
    (world.tmp / "link").symlink_to(world.tmp / "empty")
    linked = world.run("--from-runs", str(world.tmp / "link"), "--dry-run")
    assert linked.exit_code == 2 and "is a symbolic link" in linked.output
