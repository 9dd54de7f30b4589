"""A stateful fake of the GitHub REST API for tests: real HTTP on 127.0.0.1, strict like GitHub.

It holds repositories with their pull requests, conversation comments and labels, and answers the
endpoints a pull-request bot uses, with the JSON fields clients read. Branches and commits are not
simulated: each repository is backed by a real (bare) git repository, read with `git`, so `head.sha`
is whatever the test pushed and a pull request from a branch nobody pushed fails as it does on GitHub.

Usage::

    with FakeGitHub(token="ghs_test") as fake:
        fake.add_repo("octo/prompts", origin_bare_dir)          # default branch read from the bare repo
        gh = Github(auth=Auth.Token("ghs_test"), base_url=fake.url)
        ...
        fake.fail_next("POST", r"/pulls$", 502)                  # next matching request gets a 502
        fake.before_next("POST", r"/pulls$", lambda: fake.add_pull("octo/prompts", "gepa/tune"))  # a race
        assert [r.method for r in fake.requests] == [...]

Endpoints (paths relative to `url`; anything else is 404 like GitHub's unknown routes):

* `GET /repos/{o}/{r}`
* `GET|POST /repos/{o}/{r}/pulls` — GET filters `state` (open|closed|all), `head` (only in the form
  `owner:branch`; a bare branch name is silently ignored, as on GitHub), `base`, `sort`, `direction`,
  paginated with `per_page`/`page` and a `Link` header.
* `GET|PATCH /repos/{o}/{r}/pulls/{n}`
* `GET|POST /repos/{o}/{r}/issues/{n}/comments` (on issues and pull requests),
  `GET|POST /repos/{o}/{r}/issues/{n}/labels`, `GET /repos/{o}/{r}/labels`
* `GET|POST /repos/{o}/{r}/issues`, `GET|PATCH /repos/{o}/{r}/issues/{n}` (see `github_issues.py`;
  `add_issue(...)` seeds one, `issues(repo)` reads them back)
* `GET /repos/{o}/{r}/pulls/{n}/comments` (review comments on lines of the diff, with `path` and `line`)
* `GET /repos/{o}/{r}/collaborators/{user}/permission` (`permission`: admin/write/read/none, and
  `role_name`, which also says maintain/triage; a login never given a permission reads as `read`, like
  anyone on a public repository)

What is checked, as GitHub does:

* Authentication: `Authorization: token <t>` or `Bearer <t>` equal to the configured token, else 401
  (`Requires authentication` / `Bad credentials`); a `User-Agent` header, else 403.
* Permissions of the token (`permissions=`, GitHub App style, e.g. `{"pull_requests": "read"}`): a
  missing one is 403 `Resource not accessible by integration` with `X-Accepted-GitHub-Permissions`.
  `actions_can_create_prs=False` is the repository setting that makes `POST /pulls` answer 403
  `GitHub Actions is not permitted to create or approve pull requests.`
* Payloads: JSON object, required fields present, no unknown fields, right types — else 422 with
  GitHub's schema messages (`Invalid request.\\n\\n"x" is not a permitted key.`).
* Semantics, 422 `Validation Failed` with `errors[]`: head/base branch missing from the git repo, a
  second open pull request for the same head→base (`A pull request already exists for owner:branch.`),
  no commits between base and head, bodies over 65,536 characters, drafts where `drafts=False`.

What to read back: `requests` (every request, in order: method, path without the API prefix, query,
JSON body, headers, answered status; `calls(method, path_regex)` filters them), `pulls(repo)`,
`pull(repo, n)`, `comments(repo, n)`, `labels(repo)` — the same JSON the API would return — and
`errors`, exceptions raised inside the fake or a `before_next` callback (each answered with a 500).

Scripting: `fail_next(method, path_regex, status, body, headers, times=1)` answers the next matching
requests with an error (before authentication, like a proxy or an outage would);
`before_next(method, path_regex, callback)` runs `callback` once just before a matching request is
handled (to create a competing pull request between a client's look-up and its create);
`add_pull(...)` seeds a pull request as another user would open it; `add_comment(repo, n, body, user)` and
`add_review_comment(repo, n, body, user, path, line)` seed comments by other people, and
`set_permission(repo, user, role)` gives a user a role (admin, maintain, write, triage, read, none).

The module holds the server's routes; what it checks and how it words refusals is in `github_rules`,
and its recorded requests, faults, repositories and git look-ups are in `github_state`.

Timestamps come from a counter (one second per change from 2024-01-01T00:00:00Z) and ids from counters,
so answers do not depend on when the test ran.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from fakes.github_issues import ISSUE_ROUTES, IssueRoutes
from fakes.github_rules import (
    CREATE_PULL_FIELDS,
    DEFAULT_PERMISSIONS,
    LEVELS,
    MAX_BODY,
    UPDATE_PULL_FIELDS,
    Refusal,
    accepted_header,
    check_payload,
    error_body,
    invalid,
    validation_failed,
)
from fakes.github_state import Fault, Hook, RecordedRequest, Repo, branch_sha, is_ancestor, run_git, stable_id
from fakes.loopback import LoopbackHandler, LoopbackServer

__all__ = ["FakeGitHub", "RecordedRequest", "branch_sha", "error_body"]

EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


# Routes: method, path pattern, handler name, accepted permission sets (alternatives).
_ROUTES: list[tuple[str, re.Pattern[str], str, list[dict[str, str]]]] = [
    ("GET", re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)"), "_get_repo", [{"metadata": "read"}]),
    ("GET", re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls"), "_list_pulls", [{"pull_requests": "read"}]),
    ("POST", re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls"), "_create_pull", [{"pull_requests": "write"}]),
    ("GET", re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)"), "_get_pull", [{"pull_requests": "read"}]),
    (
        "PATCH",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)"),
        "_update_pull",
        [{"pull_requests": "write"}],
    ),
    (
        "GET",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/comments"),
        "_list_comments",
        [{"issues": "read"}, {"pull_requests": "read"}],
    ),
    (
        "POST",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/comments"),
        "_create_comment",
        [{"issues": "write"}, {"pull_requests": "write"}],
    ),
    (
        "GET",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/labels"),
        "_list_issue_labels",
        [{"issues": "read"}, {"pull_requests": "read"}],
    ),
    (
        "POST",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/labels"),
        "_add_labels",
        [{"issues": "write"}, {"pull_requests": "write"}],
    ),
    ("GET", re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/labels"), "_list_repo_labels", [{"metadata": "read"}]),
    *ISSUE_ROUTES,
    (
        "GET",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)/comments"),
        "_list_review_comments",
        [{"pull_requests": "read"}],
    ),
    (
        "GET",
        re.compile(r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/collaborators/(?P<u>[^/]+)/permission"),
        "_get_permission",
        [{"metadata": "read"}],
    ),
]
#: GitHub's `permission` field for each role (maintain counts as write, triage as read); `role_name` is the role.
ROLE_PERMISSION = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read",
                   "none": "none"}


class FakeGitHub(IssueRoutes, LoopbackServer):
    """A running fake GitHub REST API; see the module docstring. Context manager or start()/stop().

    `token` is the only credential accepted. `permissions` are the token's (GitHub App style, as the
    Actions `GITHUB_TOKEN` has them); `actions_can_create_prs` is the repository setting "Allow GitHub
    Actions to create and approve pull requests". `login` is the user the token acts as. `api_prefix` is
    the path of the API root (`/api/v3` on GitHub Enterprise Server); `web_url` is used for `html_url`s.
    """

    def __init__(
        self,
        token: str = "ghs_fake_token",
        *,
        repos: Mapping[str, str | Path] | None = None,
        permissions: Mapping[str, str] | None = None,
        actions_can_create_prs: bool = True,
        login: str = "github-actions[bot]",
        api_prefix: str = "",
        web_url: str = "https://github.com",
    ) -> None:
        super().__init__()
        self.token = token
        self.permissions = dict(DEFAULT_PERMISSIONS if permissions is None else permissions)
        self.actions_can_create_prs = actions_can_create_prs
        self.login = login
        self.api_prefix = "/" + api_prefix.strip("/") if api_prefix.strip("/") else ""
        self.web_url = web_url.rstrip("/")
        self.requests: list[RecordedRequest] = []
        self.errors: list[Exception] = []  # exceptions raised by the fake or a callback (answered with 500)
        self._repos: dict[str, Repo] = {}
        self._faults: list[Fault] = []
        self._hooks: list[Hook] = []
        self._clock = 0
        self._next_id = 1000
        self._lock = threading.RLock()
        for full_name, git_dir in (repos or {}).items():
            self.add_repo(full_name, git_dir)

    # -- lifecycle: start/stop/port/root and the context manager come from LoopbackServer ----------------

    @property
    def url(self) -> str:
        """The API root to give a client (PyGithub's `base_url`, `$GITHUB_API_URL`)."""
        return self.root + self.api_prefix

    # -- seeding and reading state --------------------------------------------------------------------

    def add_repo(
        self,
        full_name: str,
        git_dir: str | Path,
        *,
        default_branch: str | None = None,
        private: bool = False,
        drafts: bool = True,
    ) -> None:
        """Serve repository "owner/name", its branches being those of the git repository `git_dir`.

        `default_branch` defaults to the bare repository's HEAD; `drafts=False` is a repository whose
        plan has no draft pull requests (they answer 422).
        """
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository must be 'owner/name', got {full_name!r}")
        git_dir = Path(git_dir)
        if default_branch is None:
            head = run_git(git_dir, "symbolic-ref", "--short", "HEAD")
            default_branch = head.stdout.strip() if head.returncode == 0 and head.stdout.strip() else "main"
        with self._lock:
            self._repos[full_name.lower()] = Repo(
                owner=owner,
                name=name,
                git_dir=git_dir,
                default_branch=default_branch,
                private=private,
                drafts=drafts,
                id=stable_id(full_name),
            )

    def add_pull(
        self,
        full_name: str,
        head: str,
        base: str | None = None,
        *,
        title: str = "A pull request opened by someone else",
        body: str = "",
        user: str = "octocat",
        draft: bool = False,
        state: str = "open",
        labels: tuple[str, ...] = (),
    ) -> int:
        """Seed a pull request (as `user` would open it) and return its number; the branches must exist."""
        with self._lock:
            repo = self._repo(full_name)
            base = base or repo.default_branch
            head_sha, base_sha = branch_sha(repo.git_dir, head), branch_sha(repo.git_dir, base)
            if head_sha is None or base_sha is None:
                raise ValueError(f"branch {head if head_sha is None else base!r} is not in {repo.git_dir}")
            if state == "open" and self._open_pull(repo, head, base) is not None:
                raise ValueError(f"an open pull request for {head} -> {base} already exists")
            pull = self._new_pull(repo, head, base, head_sha, base_sha, title, body, user, draft)
            if state == "closed":
                pull["state"], pull["closed_at"] = "closed", self._now()
            for name in labels:
                self._attach_label(repo, pull, name)
            return int(pull["number"])

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        """Every pull request of the repository (open and closed) as the API renders it, by number."""
        with self._lock:
            repo = self._repo(full_name)
            return [self._pull_json(repo, p) for _, p in sorted(repo.pulls.items())]

    def pull(self, full_name: str, number: int) -> dict[str, Any]:
        with self._lock:
            repo = self._repo(full_name)
            return self._pull_json(repo, repo.pulls[number])

    def comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._repo(full_name).comments.get(number, [])]

    def add_comment(self, full_name: str, number: int, body: str, user: str) -> dict[str, Any]:
        """A conversation comment on pull request `number` written by `user` (not the token's account)."""
        with self._lock:
            repo = self._repo(full_name)
            self._find_pull(repo, number)
            comment = self._comment_json(repo, number, body, user)
            repo.comments.setdefault(number, []).append(comment)
            return dict(comment)

    def add_review_comment(self, full_name: str, number: int, body: str, user: str, path: str,
                           line: int) -> dict[str, Any]:
        """A review comment by `user` on `line` of `path` in the diff of pull request `number`."""
        with self._lock:
            repo = self._repo(full_name)
            pull = self._find_pull(repo, number)
            comment_id, now = self._id(), self._now()
            api = f"{self.url}/repos/{repo.full_name}"
            comment = {
                "id": comment_id, "node_id": f"PRRC_fake{comment_id}", "pull_request_review_id": self._id(),
                "url": f"{api}/pulls/comments/{comment_id}",
                "html_url": f"{self.web_url}/{repo.full_name}/pull/{number}#discussion_r{comment_id}",
                "pull_request_url": f"{api}/pulls/{number}", "diff_hunk": f"@@ -1 +1 @@\n+{path}",
                "path": path, "line": line, "original_line": line, "side": "RIGHT", "start_line": None,
                "position": line, "original_position": line, "subject_type": "line",
                "commit_id": pull["head_sha"], "original_commit_id": pull["head_sha"],
                "body": body, "user": self._user_json(user), "created_at": now, "updated_at": now,
                "author_association": "COLLABORATOR",
            }
            repo.review_comments.setdefault(number, []).append(comment)
            return dict(comment)

    def set_permission(self, full_name: str, user: str, role: str) -> None:
        """Give `user` a role on the repository: admin, maintain, write, triage, read or none."""
        if role not in ROLE_PERMISSION:
            raise ValueError(f"role must be one of {', '.join(ROLE_PERMISSION)}, got {role!r}")
        with self._lock:
            self._repo(full_name).roles[user.lower()] = role

    def labels(self, full_name: str) -> list[dict[str, Any]]:
        """The repository's labels (including those GitHub created when they were first added)."""
        with self._lock:
            return [dict(label) for label in self._repo(full_name).labels.values()]

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[RecordedRequest]:
        """The recorded requests with this method and/or a path matching `path_regex` (re.search)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (path_regex is None or re.search(path_regex, r.path))
            ]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- scripting -----------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests matching `method` ("*" for any) and `path_regex` (re.search on
        the path without prefix and query) with `status` and `body` (default: GitHub's error JSON)."""
        with self._lock:
            self._faults.append(
                Fault(method.upper(), re.compile(path_regex), status, body, dict(headers or {}), times)
            )

    def before_next(self, method: str, path_regex: str, callback: Callable[[], object]) -> None:
        """Run `callback` once, just before the next matching request is handled."""
        with self._lock:
            self._hooks.append(Hook(method.upper(), re.compile(path_regex), callback))

    # -- request handling (handler threads) -----------------------------------------------------------

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(raw_path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            payload = json.loads(raw_body) if raw_body else None
        except ValueError:
            payload = raw_body.decode("utf-8", "replace")
        prefixed = True
        rel = path
        if self.api_prefix:
            prefixed = path == self.api_prefix or path.startswith(self.api_prefix + "/")
            rel = path[len(self.api_prefix) :] if prefixed else path
        rel = rel.rstrip("/") or "/"
        record = RecordedRequest(method, rel, query, payload, headers)
        with self._lock:
            self.requests.append(record)
            fault = self._take_fault(method, rel)
            hook = self._take_hook(method, rel)
        try:
            status, body, extra = self._answer(method, rel, query, headers, payload, raw_body, prefixed, fault, hook)
        except Exception as exc:  # a bug in the fake or a test callback: answer, and keep it for the test
            with self._lock:
                self.errors.append(exc)
            status, body, extra = 500, error_body(500, f"the fake raised {exc!r}"), {}
        record.status = status
        return status, body, extra

    def _answer(
        self,
        method: str,
        rel: str,
        query: dict[str, str],
        headers: dict[str, str],
        payload: Any,
        raw_body: bytes,
        prefixed: bool,
        fault: Fault | None,
        hook: Hook | None,
    ) -> tuple[int, Any, dict[str, str]]:
        if fault is not None:
            return fault.status, fault.body if fault.body is not None else error_body(fault.status), fault.headers
        if hook is not None:
            hook.callback()
        try:
            if raw_body and isinstance(payload, str):
                raise Refusal(400, error_body(400, "Problems parsing JSON"))
            self._authenticate(headers)
            if not prefixed:
                raise Refusal(404, error_body(404))
            for route_method, pattern, handler, needs in _ROUTES:
                match = pattern.fullmatch(rel)
                if match is None or route_method != method:
                    continue
                with self._lock:
                    repo = self._repos.get(f"{match['o']}/{match['r']}".lower())
                    if repo is None:
                        raise Refusal(404, error_body(404))
                    self._authorize(needs)
                    if "u" in pattern.groupindex:  # the one route keyed by a login, not a number
                        return getattr(self, handler)(repo, unquote(match["u"]), query, payload)
                    number = int(match["n"]) if "n" in pattern.groupindex else None
                    return getattr(self, handler)(repo, number, query, payload)
            raise Refusal(404, error_body(404))
        except Refusal as answer:
            return answer.status, answer.body, answer.headers

    def _take_fault(self, method: str, rel: str) -> Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.search(rel):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _take_hook(self, method: str, rel: str) -> Hook | None:
        for hook in self._hooks:
            if hook.method in ("*", method) and hook.pattern.search(rel):
                self._hooks.remove(hook)
                return hook
        return None

    def _authenticate(self, headers: dict[str, str]) -> None:
        if not headers.get("user-agent"):
            raise Refusal(
                403,
                error_body(403, "Request forbidden by administrative rules. Please make sure your request has a "
                                "User-Agent header"),
            )
        auth = headers.get("authorization", "")
        if not auth:
            raise Refusal(401, error_body(401, "Requires authentication"))
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer") or credential.strip() != self.token:
            raise Refusal(401, error_body(401, "Bad credentials"))

    def _authorize(self, needs: list[dict[str, str]]) -> None:
        def granted(need: dict[str, str]) -> bool:
            return all(
                LEVELS.get(self.permissions.get(k, "read" if k == "metadata" else "none"), 0) >= LEVELS[v]
                for k, v in need.items()
            )

        if not any(granted(need) for need in needs):
            raise Refusal(
                403,
                error_body(403, "Resource not accessible by integration"),
                {"X-Accepted-GitHub-Permissions": accepted_header(needs)},
            )

    # -- routes (called with the lock held) -------------------------------------------------------------

    def _get_repo(self, repo: Repo, _n: int | None, _q: dict[str, str], _p: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self._repo_json(repo), {}

    def _list_pulls(self, repo: Repo, _n: int | None, q: dict[str, str], _p: Any) -> tuple[int, Any, dict[str, str]]:
        state = q.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise validation_failed({"resource": "PullRequest", "field": "state", "code": "invalid"})
        pulls = [p for p in repo.pulls.values() if state == "all" or p["state"] == state]
        head = q.get("head", "")
        if ":" in head:  # GitHub ignores a head filter that is not "owner:branch"
            owner, _, ref = head.partition(":")
            pulls = [p for p in pulls if owner.lower() == repo.owner.lower() and p["head_ref"] == ref]
        if q.get("base"):
            pulls = [p for p in pulls if p["base_ref"] == q["base"]]
        sort = q.get("sort", "created")
        key = "updated_at" if sort == "updated" else "created_at"
        descending = q.get("direction", "desc") != "asc"
        pulls.sort(key=lambda p: (p[key], p["number"]), reverse=descending)
        items = [self._pull_json(repo, p) for p in pulls]
        return self._paginate(f"/repos/{repo.full_name}/pulls", q, items)

    def _create_pull(self, repo: Repo, _n: int | None, _q: dict[str, str], p: Any) -> tuple[int, Any, dict[str, str]]:
        payload = check_payload(p, CREATE_PULL_FIELDS, required=("head", "base"))
        if "issue" in payload:
            raise invalid('"issue" is not supported by this fake; send "title" instead.')
        if "title" not in payload:
            raise invalid('"title" wasn\'t supplied.')
        if not self.actions_can_create_prs and self.login == "github-actions[bot]":
            raise Refusal(403, error_body(403, "GitHub Actions is not permitted to create or approve pull requests."))
        title, body = payload["title"], payload.get("body", "")
        if not title.strip():
            raise validation_failed({"resource": "PullRequest", "code": "missing_field", "field": "title"})
        self._check_body(body)
        head_owner, _, head_ref = payload["head"].rpartition(":")
        if head_owner and head_owner.lower() != repo.owner.lower():
            raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
        base_ref = payload["base"]
        base_sha = branch_sha(repo.git_dir, base_ref)
        if base_sha is None:
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        head_sha = branch_sha(repo.git_dir, head_ref)
        if head_sha is None:
            raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
        if self._open_pull(repo, head_ref, base_ref) is not None:
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"A pull request already exists for {repo.owner}:{head_ref}.",
                }
            )
        if is_ancestor(repo.git_dir, head_sha, base_sha):
            message = f"No commits between {base_ref} and {head_ref}"
            raise validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
        draft = payload.get("draft", False)
        if draft and not repo.drafts:
            raise Refusal(422, error_body(422, "Draft pull requests are not supported in this repository."))
        pull = self._new_pull(repo, head_ref, base_ref, head_sha, base_sha, title, body, self.login, draft)
        pull["maintainer_can_modify"] = payload.get("maintainer_can_modify", False)
        rendered = self._pull_json(repo, pull)
        return 201, rendered, {"Location": rendered["url"]}

    def _get_pull(self, repo: Repo, n: int | None, _q: dict[str, str], _p: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self._pull_json(repo, self._find_pull(repo, n)), {}

    def _update_pull(self, repo: Repo, n: int | None, _q: dict[str, str], p: Any) -> tuple[int, Any, dict[str, str]]:
        pull = self._find_pull(repo, n)
        payload = check_payload(p, UPDATE_PULL_FIELDS)
        if "title" in payload and not payload["title"].strip():
            raise validation_failed({"resource": "PullRequest", "code": "missing_field", "field": "title"})
        if "body" in payload:
            self._check_body(payload["body"])
        state = payload.get("state", pull["state"])
        if state not in ("open", "closed"):
            raise validation_failed({"resource": "PullRequest", "field": "state", "code": "invalid"})
        base_ref = payload.get("base", pull["base_ref"])
        if "base" in payload and branch_sha(repo.git_dir, base_ref) is None:
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        if state == "open" and pull["state"] == "closed":
            other = self._open_pull(repo, pull["head_ref"], base_ref)
            if other is not None:
                raise validation_failed(
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {repo.owner}:{pull['head_ref']}.",
                    }
                )
        for key in ("title", "body", "maintainer_can_modify"):
            if key in payload:
                pull[key] = payload[key]
        pull["base_ref"] = base_ref
        if state != pull["state"]:
            pull["state"] = state
            pull["closed_at"] = self._now() if state == "closed" else None
        pull["updated_at"] = self._now()
        return 200, self._pull_json(repo, pull), {}

    def _list_comments(
        self, repo: Repo, n: int | None, q: dict[str, str], _p: Any
    ) -> tuple[int, Any, dict[str, str]]:
        self._find_issue_or_pull(repo, n)
        items = [dict(c) for c in repo.comments.get(n or 0, [])]
        return self._paginate(f"/repos/{repo.full_name}/issues/{n}/comments", q, items)

    def _create_comment(
        self, repo: Repo, n: int | None, _q: dict[str, str], p: Any
    ) -> tuple[int, Any, dict[str, str]]:
        pull = self._find_issue_or_pull(repo, n)
        payload = check_payload(p, {"body": str}, required=("body",))
        text = payload["body"]
        if not text.strip():
            raise validation_failed({"resource": "IssueComment", "code": "missing_field", "field": "body"})
        self._check_body(text, resource="IssueComment")
        comment = self._comment_json(repo, int(pull["number"]), text, self.login)
        repo.comments.setdefault(pull["number"], []).append(comment)
        pull["updated_at"] = comment["updated_at"]
        return 201, dict(comment), {"Location": comment["url"]}

    def _comment_json(self, repo: Repo, number: int, body: str, user: str) -> dict[str, Any]:
        comment_id, now = self._id(), self._now()
        api = f"{self.url}/repos/{repo.full_name}"
        return {
            "id": comment_id,
            "node_id": f"IC_fake{comment_id}",
            "url": f"{api}/issues/comments/{comment_id}",
            "html_url": f"{self.web_url}/{repo.full_name}/{'issues' if number in repo.issues else 'pull'}/{number}"
                        f"#issuecomment-{comment_id}",
            "issue_url": f"{api}/issues/{number}",
            "body": body,
            "user": self._user_json(user),
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        }

    def _list_review_comments(
        self, repo: Repo, n: int | None, q: dict[str, str], _p: Any
    ) -> tuple[int, Any, dict[str, str]]:
        self._find_pull(repo, n)
        items = [dict(c) for c in repo.review_comments.get(n or 0, [])]
        return self._paginate(f"/repos/{repo.full_name}/pulls/{n}/comments", q, items)

    def _get_permission(
        self, repo: Repo, login: str, _q: dict[str, str], _p: Any
    ) -> tuple[int, Any, dict[str, str]]:
        role = repo.roles.get(login.lower(), "read")
        return 200, {"permission": ROLE_PERMISSION[role], "role_name": role, "user": self._user_json(login)}, {}

    def _list_issue_labels(
        self, repo: Repo, n: int | None, q: dict[str, str], _p: Any
    ) -> tuple[int, Any, dict[str, str]]:
        pull = self._find_pull(repo, n)
        items = [dict(repo.labels[name.lower()]) for name in pull["labels"]]
        return self._paginate(f"/repos/{repo.full_name}/issues/{n}/labels", q, items)

    def _add_labels(self, repo: Repo, n: int | None, _q: dict[str, str], p: Any) -> tuple[int, Any, dict[str, str]]:
        """Accepts every form GitHub documents: {"labels": [...]}, a bare array, a single string; each label
        a name or {"name": ...}. Missing labels are created in the repository, as GitHub does."""
        pull = self._find_pull(repo, n)
        raw: Any = p
        if isinstance(p, dict):
            raw = check_payload(p, {"labels": list}, required=("labels",))["labels"]
        elif isinstance(p, str):
            raw = [p]
        if not isinstance(raw, list):
            raise invalid(f"For 'links/0/schema', {json.dumps(p)} is not an array.")
        names: list[str] = []
        for item in raw:
            if isinstance(item, dict):
                item = check_payload(item, {"name": str}, required=("name",))["name"]
            if not isinstance(item, str):
                raise invalid(f"For 'items', {json.dumps(item)} is not a string.")
            if not item.strip() or len(item) > 50:
                raise validation_failed({"resource": "Label", "field": "name", "code": "invalid"})
            names.append(item)
        if not raw:
            pull["labels"] = []
        for name in names:
            self._attach_label(repo, pull, name)
        pull["updated_at"] = self._now()
        return 200, [dict(repo.labels[name.lower()]) for name in pull["labels"]], {}

    def _list_repo_labels(
        self, repo: Repo, _n: int | None, q: dict[str, str], _p: Any
    ) -> tuple[int, Any, dict[str, str]]:
        items = [dict(label) for label in repo.labels.values()]
        return self._paginate(f"/repos/{repo.full_name}/labels", q, items)

    # -- state helpers (lock held) -----------------------------------------------------------------------

    def _repo(self, full_name: str) -> Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"no repository {full_name!r}; call add_repo first")
        return repo

    def _find_pull(self, repo: Repo, number: int | None) -> dict[str, Any]:
        pull = repo.pulls.get(number or 0)
        if pull is None:
            raise Refusal(404, error_body(404))
        return pull

    def _find_issue_or_pull(self, repo: Repo, number: int | None) -> dict[str, Any]:
        """Comments belong to issues and pull requests alike (one number sequence)."""
        issue = repo.issues.get(number or 0)
        return issue if issue is not None else self._find_pull(repo, number)

    def _open_pull(self, repo: Repo, head_ref: str, base_ref: str) -> dict[str, Any] | None:
        for pull in repo.pulls.values():
            if pull["state"] == "open" and pull["head_ref"] == head_ref and pull["base_ref"] == base_ref:
                return pull
        return None

    def _check_body(self, body: str, resource: str = "Issue") -> None:
        if len(body) > MAX_BODY:
            raise validation_failed(
                {
                    "resource": resource,
                    "code": "custom",
                    "field": "body",
                    "message": f"body is too long (maximum is {MAX_BODY} characters)",
                }
            )

    def _new_pull(
        self,
        repo: Repo,
        head_ref: str,
        base_ref: str,
        head_sha: str,
        base_sha: str,
        title: str,
        body: str,
        user: str,
        draft: bool,
    ) -> dict[str, Any]:
        number = repo.next_number
        repo.next_number += 1
        now = self._now()
        pull: dict[str, Any] = {
            "id": self._id(),
            "number": number,
            "state": "open",
            "title": title,
            "body": body,
            "user": user,
            "draft": draft,
            "head_ref": head_ref,
            "head_sha": head_sha,
            "base_ref": base_ref,
            "base_sha": base_sha,
            "labels": [],
            "maintainer_can_modify": False,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
        }
        repo.pulls[number] = pull
        return pull

    def _attach_label(self, repo: Repo, pull: dict[str, Any], name: str) -> None:
        label = repo.labels.get(name.lower())
        if label is None:
            label_id = self._id()
            label = {
                "id": label_id,
                "node_id": f"LA_fake{label_id}",
                "url": f"{self.url}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "color": "ededed",
                "default": False,
                "description": None,
            }
            repo.labels[name.lower()] = label
        if all(existing.lower() != name.lower() for existing in pull["labels"]):
            pull["labels"].append(label["name"])

    def _now(self) -> str:
        self._clock += 1
        return (EPOCH + timedelta(seconds=self._clock)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _paginate(self, path: str, q: dict[str, str], items: list[Any]) -> tuple[int, Any, dict[str, str]]:
        try:
            per_page = min(max(int(q.get("per_page", 30)), 1), 100)
            page = max(int(q.get("page", 1)), 1)
        except ValueError:
            raise invalid("per_page and page must be integers.") from None
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(p: int, rel: str) -> str:
            return f'<{self.url}{path}?{urlencode({**q, "per_page": per_page, "page": p})}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    # -- JSON renderings -------------------------------------------------------------------------------------

    def _user_json(self, login: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": stable_id(login),
            "node_id": f"U_fake{stable_id(login)}",
            "type": "Bot" if login.endswith("[bot]") else "User",
            "url": f"{self.url}/users/{login}",
            "html_url": f"{self.web_url}/{login}",
            "site_admin": False,
        }

    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        return {
            "id": repo.id,
            "node_id": f"R_fake{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self._user_json(repo.owner),
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "fork": False,
            "html_url": f"{self.web_url}/{repo.full_name}",
            "url": f"{self.url}/repos/{repo.full_name}",
            "pulls_url": f"{self.url}/repos/{repo.full_name}/pulls{{/number}}",
            "default_branch": repo.default_branch,
            "archived": False,
            "disabled": False,
        }

    def _pull_json(self, repo: Repo, pull: dict[str, Any]) -> dict[str, Any]:
        """A pull request as `GET /pulls/{n}` renders it; an open one's head follows its branch, as on GitHub."""
        if pull["state"] == "open":
            pull["head_sha"] = branch_sha(repo.git_dir, pull["head_ref"]) or pull["head_sha"]
            pull["base_sha"] = branch_sha(repo.git_dir, pull["base_ref"]) or pull["base_sha"]
        api = f"{self.url}/repos/{repo.full_name}"
        n = pull["number"]
        repo_json = self._repo_json(repo)
        owner_json = self._user_json(repo.owner)
        return {
            "url": f"{api}/pulls/{n}",
            "id": pull["id"],
            "node_id": f"PR_fake{pull['id']}",
            "html_url": f"{self.web_url}/{repo.full_name}/pull/{n}",
            "diff_url": f"{self.web_url}/{repo.full_name}/pull/{n}.diff",
            "patch_url": f"{self.web_url}/{repo.full_name}/pull/{n}.patch",
            "issue_url": f"{api}/issues/{n}",
            "comments_url": f"{api}/issues/{n}/comments",
            "number": n,
            "state": pull["state"],
            "locked": False,
            "title": pull["title"],
            "body": pull["body"] or None,  # GitHub sends null for an empty body
            "user": self._user_json(pull["user"]),
            "labels": [dict(repo.labels[name.lower()]) for name in pull["labels"]],
            "created_at": pull["created_at"],
            "updated_at": pull["updated_at"],
            "closed_at": pull["closed_at"],
            "merged_at": None,
            "draft": pull["draft"],
            "head": {
                "label": f"{repo.owner}:{pull['head_ref']}",
                "ref": pull["head_ref"],
                "sha": pull["head_sha"],
                "user": owner_json,
                "repo": repo_json,
            },
            "base": {
                "label": f"{repo.owner}:{pull['base_ref']}",
                "ref": pull["base_ref"],
                "sha": pull["base_sha"],
                "user": owner_json,
                "repo": repo_json,
            },
            "author_association": "CONTRIBUTOR",
            "merged": False,
            "mergeable": None,
            "comments": len(repo.comments.get(n, [])),
            "maintainer_can_modify": pull["maintainer_can_modify"],
        }

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            used = len(self.requests)
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(max(5000 - used, 0)),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Reset": str(int((EPOCH + timedelta(days=3650)).timestamp())),
            "X-RateLimit-Resource": "core",
        }


class _Handler(LoopbackHandler):
    """Every answer has a Content-Length and GitHub's usual headers."""

    fake: FakeGitHub

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body, extra = self.fake._handle(method, self.path, headers, raw)
        data = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
            rate = self.fake._rate_headers()
            names = {k.lower() for k in extra}
            for name, value in [*rate.items(), *extra.items()]:
                if name in rate and name.lower() in names:
                    continue  # an injected fault's X-RateLimit-* wins over the defaults
                self.send_header(name, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")


FakeGitHub.handler = _Handler
