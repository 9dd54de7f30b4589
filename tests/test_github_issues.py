"""`github_issues.Issues` against the fake GitHub's issue endpoints (real HTTP, PyGithub), and the fake's
own GitHub-like rules: pull requests in the issue list, the label filter, state_reason, one number
sequence for issues and pull requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fakes.git_repos import ENV, git, make_origin
from fakes.github_server import FakeGitHub

from gepa_action.github import GitHubError
from gepa_action.github_issues import Issues

REPO = "octo/prompts"
TOKEN = "ghs_issue_token"
MARK = "<!-- gepa-tune:drift abc -->"


@pytest.fixture
def github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    bare, clone = make_origin(tmp_path, files={"a.txt": "a"})
    git(clone, "checkout", "--quiet", "-b", "feature")
    (clone / "b.txt").write_text("b")
    git(clone, "add", "-A")
    git(clone, "commit", "--quiet", "-m", "b")
    git(clone, "push", "--quiet", "origin", "feature")
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO, bare)
        yield fake


def client(github: FakeGitHub) -> Issues:
    return Issues(REPO, TOKEN, api_url=github.url, write_interval=0)


def test_open_find_edit_comment_close(github: FakeGitHub) -> None:
    pull = github.add_pull(REPO, "feature", labels=("gepa-tune-drift",), body=MARK)  # a PR is no issue
    issues = client(github)
    assert issues.find_marked("gepa-tune-drift", MARK) is None
    info = issues.open_issue(title="drift", body=f"{MARK}\nbody", labels=["gepa-tune-drift"])
    assert info.number == pull + 1 and info.labels == ("gepa-tune-drift",)  # one number sequence
    assert info.url == f"https://github.com/{REPO}/issues/{info.number}"
    assert issues.find_marked("gepa-tune-drift", MARK) == info
    assert issues.find_marked("other-label", MARK) is None
    edited = issues.edit_issue(info.number, body=f"{MARK}\nnew")
    assert edited.body.endswith("new") and edited.state == "open"
    closed = issues.close_issue(info.number, "recovered")
    assert closed.state == "closed"
    [stored] = github.issues(REPO)
    assert stored["state_reason"] == "completed" and stored["closed_at"]
    assert [c["body"] for c in github.comments(REPO, info.number)] == ["recovered"]
    assert issues.find_marked("gepa-tune-drift", MARK) is None  # closed ones are not found


def test_the_fake_lists_prs_among_issues_and_validates_like_github(github: FakeGitHub) -> None:
    github.add_pull(REPO, "feature")
    number = github.add_issue(REPO, "bug", labels=("A", "b"))
    headers = {"Authorization": f"token {TOKEN}", "User-Agent": "test"}
    listed = requests.get(f"{github.url}/repos/{REPO}/issues", headers=headers, timeout=5).json()
    assert [("pull_request" in i, i["number"]) for i in listed] == [(False, number), (True, 1)]
    both = requests.get(f"{github.url}/repos/{REPO}/issues", params={"labels": "a,B"}, headers=headers, timeout=5)
    assert [i["number"] for i in both.json()] == [number]
    bad = requests.patch(f"{github.url}/repos/{REPO}/issues/{number}", json={"state": "closed",
                         "state_reason": "fixed"}, headers=headers, timeout=5)
    assert bad.status_code == 422
    untitled = requests.post(f"{github.url}/repos/{REPO}/issues", json={"body": "x"}, headers=headers, timeout=5)
    assert untitled.status_code == 422 and "title" in untitled.json()["message"]
    missing = requests.get(f"{github.url}/repos/{REPO}/issues/99", headers=headers, timeout=5)
    assert missing.status_code == 404


def test_a_server_error_is_one_line_without_the_token(github: FakeGitHub) -> None:
    github.fail_next("POST", r"/issues$", 502)
    with pytest.raises(GitHubError) as caught:
        client(github).open_issue(title="t", body="b", labels=[])
    assert "could not open an issue" in str(caught.value) and "HTTP 502" in str(caught.value)
    assert TOKEN not in str(caught.value) and len(github.issues(REPO)) == 0  # a POST is never retried
