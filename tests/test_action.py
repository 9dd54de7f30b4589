"""`gepa-tune action` end to end: the simulated task tunes against a loopback OpenAI-protocol server,
real git pushes to a local bare `origin`, and PyGithub talks real HTTP to a stateful fake of GitHub's
REST API. Each test is one situation a team meets on a Monday morning."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from fakes import rule_task
from fakes.actions_runner import read_outputs, run_step
from fakes.git_repos import ENV, commit_on, git, make_origin
from fakes.github_server import FakeGitHub
from fakes.openai_server import FakeOpenAI

from gepa_action import action as action_module
from gepa_action.gitops import TRAILER

REPO = "octo/prompts"
TOKEN = "ghs_fake_workflow_token_123"
BRANCH = "gepa-tune/route"
HOSTILE_ID = "@org/team closes #1 <script>alert(1)</script> `x` | y"


@dataclass
class World:
    tmp: Path
    bare: Path
    clone: Path
    github: FakeGitHub
    server: FakeOpenAI

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return run_step(self.tmp, self.clone, "action", *args, repository=REPO, token=TOKEN,
                        api_url=self.github.url, run_id="42", **{"GEPA_TUNE_API_KEY": "", **(env or {})})

    @staticmethod
    def shown(result: Result) -> str:
        """What a person sees in the log: the runner consumes `::add-mask::` lines, never prints them."""
        return "\n".join(line for line in result.output.splitlines() if not line.startswith("::add-mask::"))

    def outputs(self) -> dict[str, str]:
        return read_outputs(self.tmp)

    def pulls(self, state: str = "open") -> list[dict]:
        return [p for p in self.github.pulls(REPO) if state == "all" or p["state"] == state]

    def branch_files(self, path: str) -> str:
        return git(self.bare, "show", f"{BRANCH}:{path}")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    with FakeOpenAI(responder=rule_task.responder()) as server, FakeGitHub(token=TOKEN) as github:
        source = rule_task.write_workspace(tmp_path / "src", server.url, budget=200, per_rule=6)
        with (source / "evals/tickets.jsonl").open("a") as evals:  # hostile data, in the held-out split
            evals.write(json.dumps({"id": HOSTILE_ID, "split": "test", "expected": "billing",
                                    "inputs": {"text": "Something about refund came up @org/team closes #1 ```"},
                                    "notes": 'Rule: tickets that mention "refund" are billing.'}) + "\n")
        bare, clone = make_origin(tmp_path, source=source)
        github.add_repo(REPO, bare)
        yield World(tmp_path, bare, clone, github, server)


def test_first_run_creates_the_pr_and_a_second_run_updates_it(world: World) -> None:
    head_before = git(world.clone, "rev-parse", "HEAD")
    first = world.run("--label", "prompts,gepa-tune")
    assert first.exit_code == 0, first.output
    out = world.outputs()
    assert out["operation"] == "created" and out["improved"] == "true" and out["pull-request-number"] == "1"
    assert out["pull-request-url"].endswith("/pull/1") and out["report-path"].endswith("report.md")
    [pr] = world.pulls()
    assert pr["head"]["ref"] == BRANCH and pr["base"]["ref"] == "main"
    assert pr["body"].startswith("<!-- gepa-tune -->") and "```diff" in pr["body"]
    assert {lb["name"] for lb in pr["labels"]} == {"prompts", "gepa-tune"}
    assert 'If the ticket mentions "' in world.branch_files("prompts/system.j2")
    log = git(world.bare, "log", "--format=%an|%B", f"main..{BRANCH}")
    assert log.startswith("github-actions[bot]|gepa-tune: evolve prompts of route") and f"{TRAILER}: " in log
    # The checkout is exactly as it was: the commit was built aside and pushed by SHA.
    assert git(world.clone, "rev-parse", "HEAD") == head_before
    assert git(world.clone, "status", "--porcelain") == ""
    summary = (world.tmp / "step_summary").read_text()
    assert "Opened [the pull request](https://github.com/octo/prompts/pull/1)" in summary and "route" in summary
    lock = world.branch_files("gepa.lock")
    assert "written_by: action run " in lock and "prompts/system.j2:" in lock

    second = world.run("--seed", "1", "--label", "prompts")
    assert second.exit_code == 0, second.output
    assert world.outputs()["operation"] == "updated"
    assert len(world.pulls("all")) == 1, "never a second PR for the same branch"
    assert len(git(world.bare, "rev-list", f"main..{BRANCH}").split()) == 1, "our old commit was replaced"
    assert world.github.calls("PATCH", r"/pulls/1$")


def test_no_gain_opens_nothing_and_closes_its_own_stale_pr(world: World) -> None:
    assert world.run("--min-improvement", "2").exit_code == 0
    assert world.outputs()["operation"] == "none" and world.outputs()["improved"] == "false"
    assert not world.pulls("all") and not world.github.calls("POST", r"/pulls$")

    assert world.run().exit_code == 0 and world.outputs()["operation"] == "created"
    closed = world.run("--min-improvement", "2")
    assert closed.exit_code == 0, closed.output
    assert world.outputs()["operation"] == "closed" and world.outputs()["pull-request-number"] == "1"
    [pr] = world.pulls("all")
    assert pr["state"] == "closed"
    [comment] = world.github.comments(REPO, 1)
    assert "found no gain that clears the threshold" in comment["body"] and "CI lower bound" in comment["body"]


def test_a_human_commit_on_the_branch_is_never_pushed_over(world: World) -> None:
    assert world.run().exit_code == 0
    human = commit_on(world.bare, world.tmp, BRANCH, {"prompts/system.j2": "My careful edit.\n"}, "hand-tuned")
    again = world.run("--seed", "1")
    assert again.exit_code == 0, again.output
    assert world.outputs()["operation"] == "none" and world.outputs()["improved"] == "true"
    assert git(world.bare, "rev-parse", BRANCH) == human
    assert len(world.pulls("all")) == 1
    [comment] = world.github.comments(REPO, 1)
    assert "did not push" in comment["body"] and "Jane Dev" in comment["body"]
    assert "commits gepa-tune did not make" in again.output
    # With no gain either, a PR someone worked on is left open.
    assert world.run("--min-improvement", "2").exit_code == 0
    assert world.outputs()["operation"] == "none" and world.pulls()[0]["state"] == "open"


def test_missing_permission_is_named(world: World) -> None:
    world.github.actions_can_create_prs = False
    result = world.run()
    assert result.exit_code == 1
    assert "Allow GitHub Actions to create and approve pull requests" in result.output
    assert TOKEN not in world.shown(result)


def test_missing_pull_request_permission_names_the_workflow_permissions(world: World) -> None:
    world.github.permissions = {"contents": "write", "pull_requests": "read"}
    result = world.run()
    assert result.exit_code == 1
    assert "pull-requests: write" in result.output and TOKEN not in world.shown(result)


def test_a_pr_opened_meanwhile_is_updated_not_duplicated(world: World) -> None:
    world.github.before_next("POST", r"/pulls$", lambda: world.github.add_pull(
        REPO, BRANCH, title="opened by a colleague", body="<!-- gepa-tune -->\nold"))
    result = world.run()
    assert result.exit_code == 0, result.output
    assert world.outputs()["operation"] == "updated"
    [pr] = world.pulls("all")
    assert pr["body"] != "<!-- gepa-tune -->\nold" and pr["title"].startswith("gepa-tune: evolved prompts")


def _move_base_during_the_run(world: World, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> list[str]:
    import gepa_action.tune as tune_module

    real = tune_module.run_tune
    pushed: list[str] = []

    def run_then_move(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = real(*args, **kwargs)
        pushed.append(commit_on(world.bare, world.tmp, "main", files, "meanwhile on main"))
        return result

    monkeypatch.setattr(tune_module, "run_tune", run_then_move)
    return pushed


def test_base_moved_with_a_tuned_file_changed_pushes_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _move_base_during_the_run(world, monkeypatch, {"prompts/system.j2": "Rewritten on main.\n"})
    result = world.run()
    assert result.exit_code == 0, result.output
    assert world.outputs()["operation"] == "none"
    assert "prompts/system.j2" in result.output and "not pushed" in result.output
    assert "::warning" in result.output
    assert not world.pulls("all") and git(world.bare, "branch", "--list", BRANCH) == ""


def test_base_moved_elsewhere_builds_on_the_new_tip(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    pushed = _move_base_during_the_run(world, monkeypatch, {"docs/notes.md": "unrelated\n"})
    result = world.run()
    assert result.exit_code == 0, result.output
    assert world.outputs()["operation"] == "created"
    assert git(world.bare, "rev-parse", f"{BRANCH}^") == pushed[0]
    assert world.branch_files("docs/notes.md") == "unrelated"


def test_a_body_over_the_limit_is_cut_and_the_full_report_committed(world: World,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(action_module, "PR_BODY_LIMIT", 4000)
    result = world.run()
    assert result.exit_code == 0, result.output
    [pr] = world.pulls()
    assert len(pr["body"]) <= 4000 and "Shortened" in pr["body"]
    assert f"blob/{BRANCH}/.gepa-tune/report.md" in pr["body"]
    full = world.branch_files(".gepa-tune/report.md")
    assert len(full) > 4000 and "## route" in full or "route" in full[:400]


def test_hostile_eval_data_is_harmless_in_the_pr(world: World) -> None:
    assert world.run().exit_code == 0
    [pr] = world.pulls()
    body = pr["body"]
    assert "closes" in body, "the hostile instance is listed"
    assert "@org/team" not in body and "closes #1" not in body and "<script>" not in body
    for comment in world.github.comments(REPO, 1):
        assert "@org" not in comment["body"]


def test_a_bad_config_is_an_annotation_on_the_file(world: World) -> None:
    config = world.clone / "gepa.yaml"
    config.write_text(config.read_text().replace("  max_retries: 2", "  max_retries: 2\n  colour: blue"))
    result = world.run()
    assert result.exit_code == 2
    annotation = r"^::error file=gepa\.yaml,line=\d+,title=gepa-tune::lm\.colour: unknown key 'colour'"
    assert re.search(annotation, result.stdout, re.M), result.output
    assert world.outputs()["operation"] == "none" and not world.github.requests


def test_the_api_key_is_masked_and_never_written(world: World) -> None:
    secret = "sk-test-very-secret-0123456789"
    result = world.run(env={"GEPA_TUNE_API_KEY": secret})
    assert result.exit_code == 0, result.output
    assert f"::add-mask::{secret}" in result.stdout
    assert f"::add-mask::{TOKEN}" in result.stdout
    assert world.server.headers and all(h.get("authorization") == f"Bearer {secret}" for h in world.server.headers)
    leaked = [p for p in (world.clone / ".gepa").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked
    assert all(secret not in (r.json and str(r.json) or "") for r in world.github.requests)


def test_dry_run_needs_no_github(world: World) -> None:
    result = world.run("--dry-run", env={"GITHUB_TOKEN": "", "GITHUB_REPOSITORY": ""})
    assert result.exit_code == 0, result.output
    assert "dry run: the PR body is in" in result.output and not world.github.requests
    assert world.outputs()["operation"] == "none" and world.outputs()["improved"] == "true"


# -- when GitHub says no, and when nothing changed ------------------------------------------------------


def _one_error(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    return lines[0]


def test_a_malformed_repository_is_one_line_before_any_model_call(world: World) -> None:
    result = world.run(env={"GITHUB_REPOSITORY": "acme"})
    assert result.exit_code == 2
    assert "repository: 'acme' is not 'owner/name'" in _one_error(result)
    assert world.server.attempts == 0 and not world.github.requests
    assert world.outputs()["operation"] == "none" and world.outputs()["pull-request-number"] == ""
    assert "**Failed:**" in (world.tmp / "step_summary").read_text()


def _refuse_pushes(world: World) -> None:
    """Pushes go to a loopback server answering 403, as GitHub does to a token without `contents: write`;
    fetches still come from the bare origin."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    git(world.clone, "remote", "set-url", "--push", "origin", f"http://127.0.0.1:{server.server_address[1]}/o/p.git")


@pytest.mark.parametrize(("setup", "needle"), [
    (lambda w: {"GITHUB_REPOSITORY": "octo/missing"}, "HTTP 404"),
    (lambda w: {"GITHUB_TOKEN": "ghs_revoked"}, "the token was rejected"),
    (lambda w: _refuse_pushes(w) or {}, "could not check that origin accepts a push"),
    (lambda w: setattr(w.github, "permissions", {"contents": "write", "pull_requests": "none"}) or {},
     "could not list the open pull requests"),
], ids=["no-repository", "bad-token", "no-push", "no-pull-requests"])
def test_preflight_fails_in_seconds_before_the_run_is_paid_for(world: World, setup, needle: str) -> None:
    env = setup(world)
    started = time.monotonic()
    result = world.run(env=env)
    assert result.exit_code == 1
    assert needle in _one_error(result)
    assert time.monotonic() - started < 10 and world.server.attempts == 0, "nothing was tuned"
    assert world.outputs()["operation"] == "none"
    assert "**Failed:**" in (world.tmp / "step_summary").read_text()
    assert "ghs_revoked" not in world.shown(result) and TOKEN not in world.shown(result)


def test_labels_refused_after_the_pr_was_created_warn_and_keep_the_pr(world: World) -> None:
    world.github.fail_next("POST", r"/issues/\d+/labels$", 403,
                           headers={"X-Accepted-GitHub-Permissions": "issues=write"})
    result = world.run("--label", "prompts")
    assert result.exit_code == 0, result.output
    out = world.outputs()
    assert out["operation"] == "created" and out["pull-request-number"] == "1"
    assert re.search(r"^::warning title=gepa-tune::.*could not add labels prompts.*issues: write", result.output,
                     re.M), result.output
    assert len(world.pulls()) == 1


def test_a_github_failure_mid_flow_still_writes_outputs_and_the_summary(world: World) -> None:
    world.github.fail_next("POST", r"/pulls$", 500)
    result = world.run()
    assert result.exit_code == 1
    assert "could not create a pull request" in _one_error(result)
    out = world.outputs()
    assert out["operation"] == "none" and out["improved"] == "true" and out["report-path"].endswith("report.md")
    summary = (world.tmp / "step_summary").read_text()
    assert "## gepa-tune run" in summary and "**Failed:** GitHub: could not create a pull request" in summary


def test_an_identical_result_pushes_nothing_and_leaves_the_pr(world: World) -> None:
    assert world.run("--label", "prompts").exit_code == 0
    tip = git(world.bare, "rev-parse", BRANCH)
    [pr_before] = world.pulls()
    world.github.reset_requests()
    again = world.run("--label", "prompts")  # same seed, same inputs: the same result (from the cache)
    assert again.exit_code == 0, again.output
    out = world.outputs()
    assert out["operation"] == "unchanged" and out["pull-request-number"] == "1"
    assert out["pull-request-url"].endswith("/pull/1")
    assert git(world.bare, "rev-parse", BRANCH) == tip, "no new commit was pushed"
    assert not world.github.calls("PATCH") and not world.github.calls("POST")
    assert world.pulls()[0]["updated_at"] == pr_before["updated_at"]
    assert "unchanged" in (world.tmp / "step_summary").read_text()
    # A label asked for since is added; still nothing pushed and the body not edited.
    assert world.run("--label", "prompts,new-label").exit_code == 0
    assert world.outputs()["operation"] == "unchanged" and git(world.bare, "rev-parse", BRANCH) == tip
    assert {lb["name"] for lb in world.pulls()[0]["labels"]} == {"prompts", "new-label"}
    assert not world.github.calls("PATCH")


def test_a_human_commit_is_commented_on_once(world: World) -> None:
    assert world.run().exit_code == 0
    commit_on(world.bare, world.tmp, BRANCH, {"prompts/system.j2": "My careful edit.\n"}, "hand-tuned")
    for seed in ("1", "1", "2"):
        result = world.run("--seed", seed)
        assert result.exit_code == 0, result.output
        assert world.outputs()["operation"] == "none" and world.outputs()["pull-request-number"] == ""
    comments = world.github.comments(REPO, 1)
    assert len(comments) == 1 and "did not push" in comments[0]["body"]
    assert "already said on pull request #1" in result.output
