"""gepa_action.github against the fake GitHub API: real HTTP from PyGithub, real git for the branches.

The first group follows the Action's flow (create, find, update, comment, close; re-runs and races must
never make a duplicate). The second checks that every failure becomes one actionable line without the
token. The last group tests the fake itself, so that a too-lenient fake cannot hide a client bug.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.github_server import FakeGitHub, branch_sha
from github import Auth, Github

from gepa_action.github import MAX_BODY_CHARS, GitHubError, PullRequests

TOKEN = "ghs_S3cretTokenValue0123456789abcdefXYZ"
REPO = "octo/prompts"
BRANCH = "gepa/tune-triage"


# -- fixtures ------------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    """Run git with a fixed identity and no user or system configuration."""
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit(work: Path, name: str, text: str) -> None:
    (work / name).write_text(text)
    git(work, "add", name)
    git(work, "commit", "-q", "-m", f"change {name}")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare `origin` with `main`, `gepa/tune-triage` one commit ahead, and `stale` equal to main."""
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    git(work, "remote", "add", "origin", str(bare))
    commit(work, "prompt.j2", "Classify the ticket.")
    git(work, "push", "-q", "origin", "main", "main:stale")
    git(work, "checkout", "-q", "-b", BRANCH)
    commit(work, "prompt.j2", "Classify the support ticket into one label.")
    git(work, "push", "-q", "origin", BRANCH)
    git(work, "checkout", "-q", "-b", "other")
    commit(work, "notes.md", "other work")
    git(work, "push", "-q", "origin", "other")
    return bare


@pytest.fixture
def fake(origin: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repos={REPO: origin}) as server:
        yield server


def client(fake: FakeGitHub, token: str = TOKEN, **kwargs: Any) -> PullRequests:
    return PullRequests(REPO, token, api_url=fake.url, timeout=5, write_interval=0, **kwargs)


@pytest.fixture
def prs(fake: FakeGitHub) -> Iterator[PullRequests]:
    with client(fake) as pulls:
        yield pulls


def raw(fake: FakeGitHub, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    """A request without PyGithub, to test the fake's own checks."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(fake.url + path, data=data, method=method)
    request.add_header("User-Agent", "test")
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def assert_no_token(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), *map(str, exc.args)):
        assert TOKEN not in text
    assert "\n" not in str(exc)


# -- the Action's flow ---------------------------------------------------------------------------------


def test_create_find_update_comment_close(prs: PullRequests, fake: FakeGitHub, origin: Path) -> None:
    info, outcome = prs.create(
        branch=BRANCH, base="main", title="Tune triage", body="Score 0.71 → 0.84", draft=True,
        labels=["gepa", "prompts", "gepa"],
    )
    assert outcome == "created"
    assert (info.number, info.head, info.base, info.state, info.draft) == (1, BRANCH, "main", "open", True)
    assert info.url == f"https://github.com/{REPO}/pull/1"
    assert info.user_login == "github-actions[bot]" and info.labels == ("gepa", "prompts")
    stored = fake.pull(REPO, 1)
    assert stored["head"]["sha"] == branch_sha(origin, BRANCH) and stored["body"] == "Score 0.71 → 0.84"
    create = fake.calls("POST", r"/pulls$")[0]
    assert create.json == {"base": "main", "head": BRANCH, "title": "Tune triage", "body": "Score 0.71 → 0.84",
                           "draft": True}
    assert fake.calls("POST", r"/issues/1/labels$")[0].json == {"labels": ["gepa", "prompts"]}

    found = prs.find_open(BRANCH, "main")
    assert found == info
    assert fake.calls("GET", r"/pulls$")[-1].query["head"] == f"octo:{BRANCH}"
    assert prs.find_open("other") is None and prs.find_open(BRANCH, base="stale") is None

    updated = prs.update(1, title="Tune triage (run 2)", body="Score 0.71 → 0.86", labels=["run-2"])
    assert (updated.title, updated.body, updated.labels) == ("Tune triage (run 2)", "Score 0.71 → 0.86",
                                                             ("gepa", "prompts", "run-2"))
    assert fake.calls("PATCH")[-1].json == {"title": "Tune triage (run 2)", "body": "Score 0.71 → 0.86"}

    prs.comment(1, "Run 3 found nothing better.")
    closed = prs.close(1, "Superseded: the baseline is already the best prompt.")
    assert closed.state == "closed"
    assert [c["body"] for c in fake.comments(REPO, 1)] == [
        "Run 3 found nothing better.",
        "Superseded: the baseline is already the best prompt.",
    ]
    tail = [(r.method, r.path) for r in fake.requests[-2:]]
    assert tail == [("POST", f"/repos/{REPO}/issues/1/comments"), ("PATCH", f"/repos/{REPO}/pulls/1")]
    assert prs.find_open(BRANCH) is None
    assert all(r.status < 400 for r in fake.requests)


def test_create_updates_the_open_pull_request_instead_of_duplicating(prs: PullRequests, fake: FakeGitHub) -> None:
    number = fake.add_pull(REPO, BRANCH, "main", title="Opened by an earlier run", labels=("keep-me",))
    info, outcome = prs.create(branch=BRANCH, base="main", title="New title", body="New body", labels=["gepa"])
    assert outcome == "updated" and info.number == number
    assert (info.title, info.body, info.labels) == ("New title", "New body", ("keep-me", "gepa"))
    assert len(fake.pulls(REPO)) == 1
    assert [r.status for r in fake.calls("POST", r"/pulls$")] == [422]


def test_a_pull_request_opened_between_find_and_create_is_updated(prs: PullRequests, fake: FakeGitHub) -> None:
    assert prs.find_open(BRANCH, "main") is None
    fake.before_next("POST", r"/pulls$", lambda: fake.add_pull(REPO, BRANCH, "main", user="someone-else"))
    info, outcome = prs.create(branch=BRANCH, base="main", title="Tuned", body="b")
    assert outcome == "updated" and info.user_login == "someone-else" and info.title == "Tuned"
    assert [p["number"] for p in fake.pulls(REPO)] == [1]


def test_already_exists_but_none_open_any_more_creates_again(prs: PullRequests, fake: FakeGitHub) -> None:
    exists = {"message": "Validation Failed", "errors": [
        {"resource": "PullRequest", "code": "custom", "message": f"A pull request already exists for octo:{BRANCH}."}
    ]}
    fake.fail_next("POST", r"/pulls$", 422, exists)
    info, outcome = prs.create(branch=BRANCH, base="main", title="t", body="b")
    assert outcome == "created" and info.number == 1
    assert [r.status for r in fake.calls("POST", r"/pulls$")] == [422, 201]


def test_draft_falls_back_to_a_regular_pull_request_where_drafts_are_unsupported(
    fake: FakeGitHub, origin: Path
) -> None:
    fake.add_repo(REPO, origin, drafts=False)
    with client(fake) as prs:
        info, outcome = prs.create(branch=BRANCH, base="main", title="t", body="b", draft=True)
    assert outcome == "created" and info.draft is False
    assert [r.json.get("draft") for r in fake.calls("POST", r"/pulls$")] == [True, False]


def test_update_without_changes_only_adds_labels(prs: PullRequests, fake: FakeGitHub) -> None:
    number = fake.add_pull(REPO, BRANCH, title="Keep", body="Keep body")
    info = prs.update(number, labels=["gepa"])
    assert (info.title, info.body, info.labels) == ("Keep", "Keep body", ("gepa",))
    assert not fake.calls("PATCH")


def test_bodies_over_the_limit_are_refused_before_sending(prs: PullRequests, fake: FakeGitHub) -> None:
    too_long = "x" * (MAX_BODY_CHARS + 1)
    with pytest.raises(ValueError, match="65536"):
        prs.create(branch=BRANCH, base="main", title="t", body=too_long)
    with pytest.raises(ValueError):
        prs.comment(1, too_long)
    prs.create(branch=BRANCH, base="main", title="t", body="x" * MAX_BODY_CHARS)  # the limit itself is fine
    assert [r.method for r in fake.requests] == ["POST"]


def test_enterprise_server_api_prefix(origin: Path) -> None:
    with FakeGitHub(token=TOKEN, repos={REPO: origin}, api_prefix="/api/v3") as ghes:
        with client(ghes) as prs:
            info, _ = prs.create(branch=BRANCH, base="main", title="t", body="b", labels=["gepa"])
            prs.close(info.number, "done")
        assert ghes.url.endswith("/api/v3")
        assert [r.path for r in ghes.requests] == [
            f"/repos/{REPO}/pulls", f"/repos/{REPO}/issues/1/labels",
            f"/repos/{REPO}/issues/1/comments", f"/repos/{REPO}/pulls/1",
        ]


# -- failures: one line, what to do, never the token -------------------------------------------------------


def test_missing_pull_request_permission_names_it(origin: Path) -> None:
    permissions = {"contents": "write", "pull_requests": "read"}
    with FakeGitHub(token=TOKEN, repos={REPO: origin}, permissions=permissions) as fake, client(fake) as prs:
        assert prs.find_open(BRANCH) is None  # reading is allowed
        with pytest.raises(GitHubError) as caught:
            prs.create(branch=BRANCH, base="main", title="t", body="b")
    message = str(caught.value)
    assert caught.value.status == 403 and "HTTP 403" in message and "Resource not accessible by integration" in message
    assert "pull_requests=write" in message
    assert "`permissions: contents: write` and `pull-requests: write`" in message
    assert message.startswith(f"GitHub: could not create a pull request from '{BRANCH}' into 'main' in {REPO}")
    assert_no_token(caught.value)


def test_actions_not_permitted_names_the_repository_setting(origin: Path) -> None:
    with (
        FakeGitHub(token=TOKEN, repos={REPO: origin}, actions_can_create_prs=False) as fake,
        client(fake) as prs,
        pytest.raises(GitHubError) as caught,
    ):
        prs.create(branch=BRANCH, base="main", title="t", body="b")
    message = str(caught.value)
    assert "GitHub Actions is not permitted to create or approve pull requests" in message
    assert '"Allow GitHub Actions to create and approve pull requests"' in message
    assert "Settings → Actions → General → Workflow permissions" in message


def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture everything, PyGithub's request log included (its logger is pinned to INFO otherwise)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="github")


def test_bad_credentials(fake: FakeGitHub, caplog: pytest.LogCaptureFixture) -> None:
    debug_logs(caplog)
    wrong = "not-the-configured-token-for-this-test"
    with client(fake, token=wrong) as prs, pytest.raises(GitHubError) as caught:
        prs.find_open(BRANCH)
    message = str(caught.value)
    assert caught.value.status == 401 and "HTTP 401: Bad credentials" in message and "token was rejected" in message
    assert wrong not in message and wrong not in caplog.text
    assert fake.requests[-1].headers["authorization"] == f"token {wrong}"  # it was sent, just not echoed


def test_the_token_never_appears_even_when_github_echoes_it(
    prs: PullRequests, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logs(caplog)
    prs.create(branch=BRANCH, base="main", title="t", body="b", labels=["gepa"])  # debug logs of a success
    fake.fail_next("PATCH", r"/pulls/1$", 403, {"message": f"token {TOKEN} may not do this"})
    with pytest.raises(GitHubError) as caught:
        prs.update(1, title="again")
    assert "[redacted]" in str(caught.value)
    assert_no_token(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "POST http://127.0.0.1" in caplog.text and "token (oauth token removed)" in caplog.text  # logged, masked
    assert TOKEN not in caplog.text


def test_validation_errors_are_shown(prs: PullRequests) -> None:
    with pytest.raises(GitHubError) as missing:
        prs.create(branch="never-pushed", base="main", title="t", body="b")
    assert "HTTP 422: Validation Failed" in str(missing.value)
    assert "PullRequest field head invalid" in str(missing.value) and "push it first" in str(missing.value)
    with pytest.raises(GitHubError, match="No commits between main and stale"):
        prs.create(branch="stale", base="main", title="t", body="b")


def test_rate_limits_fail_fast_with_when_to_retry(prs: PullRequests, fake: FakeGitHub) -> None:
    reset = int(time.time()) + 3600
    limited = {"message": "API rate limit exceeded for installation ID 42."}
    fake.fail_next("POST", r"/pulls$", 403, limited, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    fake.fail_next("GET", r"/pulls$", 403, limited, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    fake.fail_next("POST", r"/comments$", 429, {"message": "You have exceeded a secondary rate limit."},
                   {"retry-after": "3600"})
    fake.fail_next("GET", r"/pulls$", 403, {"message": "You have exceeded a secondary rate limit."},
                   {"retry-after": "60"})
    started = time.monotonic()
    with pytest.raises(GitHubError, match=r"HTTP 403: API rate limit exceeded.*rate limited \(the limit resets at"):
        prs.create(branch=BRANCH, base="main", title="t", body="b")
    with pytest.raises(GitHubError, match=r"rate limited.*re-run the workflow later"):
        prs.find_open(BRANCH)
    with pytest.raises(GitHubError, match=r"HTTP 429.*GitHub asks to wait 3600 s"):
        prs.comment(1, "hello")
    with pytest.raises(GitHubError, match=r"HTTP 403: You have exceeded a secondary rate limit.*wait 60 s"):
        prs.find_open(BRANCH)
    assert time.monotonic() - started < 3
    assert len(fake.calls("GET")) == 2 and len(fake.calls("POST")) == 2  # no retries against the limit


def test_server_errors_retry_reads_but_never_posts(prs: PullRequests, fake: FakeGitHub) -> None:
    fake.fail_next("GET", r"/pulls$", 502)
    assert prs.find_open(BRANCH) is None
    assert [r.status for r in fake.calls("GET")] == [502, 200]
    fake.fail_next("POST", r"/pulls$", 502)
    with pytest.raises(GitHubError, match=r"HTTP 502.*server error; re-run the workflow later"):
        prs.create(branch=BRANCH, base="main", title="t", body="b")
    assert len(fake.calls("POST")) == 1 and fake.pulls(REPO) == []


def test_unknown_pull_request_on_write(prs: PullRequests) -> None:
    with pytest.raises(GitHubError) as caught:
        prs.update(99, title="t")
    message = str(caught.value)
    assert "could not update pull request #99" in message and "HTTP 404: Not Found" in message
    assert "pull-requests: write" in message


def test_unreachable_api(origin: Path) -> None:
    with FakeGitHub(token=TOKEN, repos={REPO: origin}) as fake:
        url = fake.url
    prs = PullRequests(REPO, TOKEN, api_url=url, timeout=2, retries=0, write_interval=0)
    with pytest.raises(GitHubError, match=r"no answer from http://127\.0\.0\.1:\d+ \(ConnectionError") as caught:
        prs.find_open(BRANCH)
    assert caught.value.status is None
    assert_no_token(caught.value)


def test_constructor_checks(fake: FakeGitHub) -> None:
    with pytest.raises(ValueError, match="owner/name"):
        PullRequests("just-a-name", TOKEN, api_url=fake.url)
    with pytest.raises(GitHubError, match="no token"):
        PullRequests(REPO, "", api_url=fake.url)


# -- the fake itself ------------------------------------------------------------------------------------


def test_fake_rejects_malformed_payloads(fake: FakeGitHub) -> None:
    path = f"/repos/{REPO}/pulls"
    ok = {"title": "t", "head": BRANCH, "base": "main"}
    status, body = raw(fake, "POST", path, {**ok, "reviewers": ["octocat"]})
    assert (status, body["message"]) == (422, 'Invalid request.\n\n"reviewers" is not a permitted key.')
    status, body = raw(fake, "POST", path, {"title": "t", "head": BRANCH})
    assert (status, body["message"]) == (422, 'Invalid request.\n\n"base" wasn\'t supplied.')
    status, body = raw(fake, "POST", path, {**ok, "draft": "yes"})
    assert (status, body["message"]) == (422, "Invalid request.\n\nFor 'properties/draft', \"yes\" is not a boolean.")
    status, body = raw(fake, "POST", path, {**ok, "head": "someone:" + BRANCH})
    assert status == 422 and body["errors"] == [{"resource": "PullRequest", "field": "head", "code": "invalid"}]
    status, body = raw(fake, "POST", path, b"{not json")
    assert (status, body["message"]) == (400, "Problems parsing JSON")
    status, body = raw(fake, "PATCH", f"{path}/1", {"state": "closed"})
    assert status == 404
    assert fake.pulls(REPO) == []
    assert raw(fake, "POST", path, ok)[0] == 201


def test_fake_rejects_unknown_fields_sent_through_pygithub(fake: FakeGitHub) -> None:
    """The same strictness reaches a PyGithub caller: a wrong field would fail a test, not pass silently."""
    from github import GithubException

    gh = Github(auth=Auth.Token(TOKEN), base_url=fake.url, retry=None, seconds_between_writes=None)
    with pytest.raises(GithubException) as caught:
        gh.requester.requestJsonAndCheck("POST", f"/repos/{REPO}/issues/1/comments", input={"text": "hi"})
    assert caught.value.status == 404  # no pull request 1 yet
    fake.add_pull(REPO, BRANCH)
    with pytest.raises(GithubException) as caught:
        gh.requester.requestJsonAndCheck("POST", f"/repos/{REPO}/issues/1/comments", input={"text": "hi"})
    assert caught.value.status == 422 and caught.value.data["message"].endswith('"text" is not a permitted key.')
    gh.close()


def test_fake_authentication_and_routes(fake: FakeGitHub) -> None:
    assert raw(fake, "GET", f"/repos/{REPO}", token=None) == (401, {
        "message": "Requires authentication", "documentation_url": "https://docs.github.com/rest", "status": "401"
    })
    assert raw(fake, "GET", f"/repos/{REPO}", token="wrong")[1]["message"] == "Bad credentials"
    status, repo = raw(fake, "GET", f"/repos/{REPO}")
    assert status == 200 and (repo["full_name"], repo["default_branch"]) == (REPO, "main")
    assert raw(fake, "GET", "/repos/octo/missing")[0] == 404
    assert raw(fake, "DELETE", f"/repos/{REPO}/pulls")[0] == 404


def test_fake_list_filters_like_github(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, BRANCH, "main")
    fake.add_pull(REPO, "other", "main")
    heads = lambda query: [p["head"]["ref"] for p in raw(fake, "GET", f"/repos/{REPO}/pulls?{query}")[1]]  # noqa: E731
    assert heads(f"head=octo:{BRANCH}") == [BRANCH]
    assert heads(f"head={BRANCH}") == ["other", BRANCH]  # a bare branch name is ignored, newest first
    assert heads("head=octo:other&base=stale") == []
    assert heads("state=closed") == []


def test_fake_paginates_with_link_headers(fake: FakeGitHub) -> None:
    for i in range(35):
        fake.add_pull(REPO, BRANCH, "main", title=f"old {i}", state="closed")
    gh = Github(auth=Auth.Token(TOKEN), base_url=fake.url, per_page=20, seconds_between_requests=None)
    titles = [p.title for p in gh.get_repo(REPO).get_pulls(state="all", direction="asc")]
    gh.close()
    assert titles == [f"old {i}" for i in range(35)]
    assert [r.query.get("page", "1") for r in fake.calls("GET", r"/pulls$")] == ["1", "2"]


def test_fake_head_sha_follows_the_branch(prs: PullRequests, fake: FakeGitHub, origin: Path, tmp_path: Path) -> None:
    prs.create(branch=BRANCH, base="main", title="t", body="b")
    work = tmp_path / "work"
    git(work, "checkout", "-q", BRANCH)
    commit(work, "prompt.j2", "A better prompt.")
    git(work, "push", "-q", "origin", BRANCH)
    assert fake.pull(REPO, 1)["head"]["sha"] == git(work, "rev-parse", "HEAD") == branch_sha(origin, BRANCH)
