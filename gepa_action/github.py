"""Pull-request operations for the scheduled Action, on top of PyGithub.

The Action pushes a branch with the evolved prompts and then needs exactly five things from the REST API:
find the open pull request for that branch, create one (or update the existing one), comment, close.
Before the run is paid for, `preflight` checks what can be checked without writing: the repository
and read access to pull requests (the push permission is checked by git, see `gitops.can_push`).
`PullRequests` does those and nothing else, so that the Action's flow reads as a few calls and every
GitHub failure arrives as one `GitHubError` line that says what was attempted, the HTTP status and
what the user has to change (usually the workflow's `permissions:` or a repository setting).

Design choices, and why:

* Re-runs are the normal case (a schedule fires every week on the same branch), so `create` never
  makes a duplicate: when GitHub answers 422 "A pull request already exists for owner:branch." (someone
  or an earlier run opened it between our look-up and our create), the open pull request is found and
  updated instead.
* Retries are few and short (5xx and network errors only). A scheduled job that hits a rate limit
  should fail with a clear message and be re-run later, not sleep for an hour inside the runner. POST
  is never retried automatically, because a POST that timed out may have succeeded (a second comment
  would be a visible duplicate).
* Labels are a courtesy, the pull request is the product: a token that may write pull requests but not
  issues gets a 403 on the labels call after the pull request exists. That is a warning on the result
  (naming `issues: write`), not a failure that hides the pull request just made.
* The token never leaves this module: PyGithub masks it in its own debug log, every message built here
  is scrubbed of it, and PyGithub's exceptions (which carry raw response data) are not chained onto
  ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import requests
from github import Auth, Github, GithubException, RateLimitExceededException, UnknownObjectException
from github.GithubObject import NotSet
from github.PullRequest import PullRequest
from urllib3 import Retry

from gepa_action.errors import RunError
from gepa_action.render.text import GITHUB_LIMIT

DEFAULT_API_URL = "https://api.github.com"
MAX_BODY_CHARS = GITHUB_LIMIT  # GitHub rejects longer pull-request bodies and comments with 422
PERMISSIONS_HINT = "the workflow needs `permissions: contents: write` and `pull-requests: write`"
LABELS_HINT = "labelling a pull request needs `permissions: issues: write` in the workflow"
ACTIONS_SETTING_HINT = (
    'turn on "Allow GitHub Actions to create and approve pull requests" in the repository (or organization) '
    "settings: Settings → Actions → General → Workflow permissions"
)
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class _RedactTokens(logging.Filter):
    """Scrubs our tokens from PyGithub's debug log.

    PyGithub masks the Authorization header there but logs response bodies verbatim, so a server that
    echoed the token (a proxy's error page, say) would put it in the log of a run with debug logging on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.tokens:
            text = record.getMessage()
            if any(token in text for token in self.tokens):
                for token in self.tokens:
                    text = text.replace(token, "[redacted]")
                record.msg, record.args = text, None
        return True


_REDACT = _RedactTokens()
for _name in ("github", "github.Requester", "github.GithubRetry"):  # a logger's filters skip its children
    logging.getLogger(_name).addFilter(_REDACT)


class GitHubError(RunError):
    """A GitHub API call that failed; the message is one line and never contains the token.

    `status` is the HTTP status when GitHub answered (None for network failures), so a caller can
    tell "no permission" from "GitHub is down" without parsing the text.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidRepository(GitHubError, ValueError):
    """`repository` is not "owner/name" (a ValueError too: it is a bad argument before it is anything)."""


def check_repository(repository: str | None) -> str:
    """`repository` if it reads "owner/name"; else one line saying what was given and what is expected."""
    if not _REPOSITORY.fullmatch(repository or "") or repository in (".", "..") or "/../" in f"/{repository}/":
        shown = (repository or "")[:100]
        raise InvalidRepository(f"GitHub: the repository must be 'owner/name', got {shown!r}; set "
                                "GITHUB_REPOSITORY=owner/name (Actions sets it)")
    return str(repository)


@dataclasses.dataclass(frozen=True)
class PullRequestInfo:
    """What the Action needs to know about a pull request, detached from PyGithub's lazy objects
    (which would make a request on attribute access, far from any error handling)."""

    number: int
    url: str  # the html_url, for people and for the job summary
    head: str
    base: str
    title: str
    body: str
    state: str
    user_login: str
    draft: bool = False
    labels: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # e.g. labels GitHub refused: the pull request itself is fine


@dataclasses.dataclass(frozen=True)
class ReviewerComment:
    """A comment on a pull request as guidance needs it: a conversation comment (`kind` "comment") or a
    review comment on `line` of `path` in the diff ("review")."""

    id: int
    kind: str
    body: str
    author: str
    url: str
    created_at: str
    path: str | None = None
    line: int | None = None


#: Most comments of each kind read from one pull request (the newest beyond it are not read).
MAX_COMMENTS = 300
#: The `permission` values of GitHub's collaborator-permission endpoint that may steer a run
#: (a maintainer reads as "write" there; `role_name` says "maintain").
WRITE_PERMISSIONS = ("admin", "maintain", "write")


class PullRequests:
    """The pull requests of one repository, as the Action uses them.

    `repository` is "owner/name" (`$GITHUB_REPOSITORY`), `api_url` the REST root (`$GITHUB_API_URL`, which
    differs on GitHub Enterprise Server). `retries` bounds the automatic retries of idempotent requests
    after 5xx answers and network errors. `write_interval` is the pause GitHub asks integrations to keep
    between writes to avoid secondary rate limits; tests set it to 0.

    Usable as a context manager to close the HTTP connections at the end.
    """

    def __init__(
        self,
        repository: str,
        token: str,
        *,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 30,
        retries: int = 2,
        write_interval: float = 1.0,
    ) -> None:
        check_repository(repository)
        if not token:
            raise GitHubError(
                "GitHub: no token given; pass `${{ secrets.GITHUB_TOKEN }}` (or a personal access token) to the Action"
            )
        self.repository = repository
        self.owner = repository.split("/", 1)[0]
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self._token = token
        _REDACT.tokens.add(token)
        self._gh = Github(
            auth=Auth.Token(token),
            base_url=self.api_url,
            timeout=max(1, math.ceil(timeout)),  # PyGithub insists on an int
            retry=_retry_policy(retries),
            seconds_between_requests=None,
            seconds_between_writes=write_interval or None,
            lazy=True,  # no request until one is needed: each method below makes only the calls it names
        )
        self._repo = self._gh.get_repo(repository)

    def __enter__(self) -> PullRequests:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._gh.close()

    # -- operations ----------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail in seconds, before a run is paid for, on what would fail after it: a wrong repository,
        URL or token (404/401), an archived repository, no read access to pull requests.

        Write access to pull requests cannot be tested without writing; a missing `pull-requests: write`
        still shows at the first write, with the same message.
        """
        # The repository's `permissions` field is not consulted for push: whether GitHub fills it for an
        # installation token (the workflow's GITHUB_TOKEN) is not something to bet a failed run on. The
        # push itself is checked where GitHub authorises it, by a `git push --dry-run` (gitops.can_push).
        with self._api("read the repository", write=False):
            _headers, data = self._gh.requester.requestJsonAndCheck("GET", self._repo.url)
        if isinstance(data, dict) and data.get("archived"):
            raise GitHubError(f"GitHub: {self.repository} is archived: nothing can be pushed to it", status=403)
        with self._api("list the open pull requests", write=False):
            self._gh.requester.requestJsonAndCheck("GET", f"{self._repo.url}/pulls",
                                                   parameters={"state": "open", "per_page": 1})

    def has_comment(self, number: int, marker: str) -> bool:
        """Whether a conversation comment on pull request `number` already contains `marker`."""
        with self._api(f"read the comments of pull request #{number}", write=False):
            return any(marker in (c.body or "") for c in self._repo.get_issue(number).get_comments())

    def comment_once(self, number: int, text: str, marker: str) -> bool:
        """Comment `text` unless a comment with `marker` is there already (a finding is said once, not on
        every scheduled run); the marker, an HTML comment, is added to the text. True if it commented."""
        if self.has_comment(number, marker):
            return False
        self.comment(number, f"{text}\n\n{marker}")
        return True

    def find_open(self, branch: str, base: str | None = None) -> PullRequestInfo | None:
        """The open pull request from `branch` of this repository (into `base`, if given), or None.

        GitHub only honours the `head` filter in the form `owner:branch` (a bare branch name is silently
        ignored and every open pull request comes back), so the owner is always added, and the answer is
        checked again here in case a server ignores the filter anyway.
        """
        query: dict[str, str] = {"state": "open", "head": f"{self.owner}:{branch}"}
        if base:
            query["base"] = base
        with self._api(f"look up the open pull request for branch {branch!r}", write=False):
            for pr in self._repo.get_pulls(**query):
                head_owner = (pr.head.label or "").split(":", 1)[0]
                same_repo = head_owner.lower() in ("", self.owner.lower())
                if pr.head.ref == branch and same_repo and (not base or pr.base.ref == base):
                    return _info(pr)
        return None

    def create(
        self,
        *,
        branch: str,
        base: str,
        title: str,
        body: str,
        draft: bool = False,
        labels: Iterable[str] = (),
    ) -> tuple[PullRequestInfo, str]:
        """Open a pull request from `branch` into `base` and label it; returns it and "created" or "updated".

        If an open one already exists for the branch, it is updated instead (title, body, labels), so
        concurrent or repeated runs never produce a duplicate. A repository that does not support draft
        pull requests (a private repository on a plan without them) gets a regular one: the returned
        `draft` says which.
        """
        _check_body(body)
        wanted = _labels(labels)
        created: PullRequest | None = None
        for _attempt in range(3):
            try:
                created = self._repo.create_pull(base=base, head=branch, title=title, body=body, draft=draft)
                break
            except GithubException as exc:
                failure = exc
            except requests.RequestException as exc:
                raise self._network_error(exc, "create a pull request") from None
            # Handled outside the `except` blocks so PyGithub's exception is not chained onto ours.
            if _is_already_exists(failure):
                existing = self.find_open(branch, base)
                if existing is not None:
                    return self.update(existing.number, title=title, body=body, labels=wanted), "updated"
                continue  # closed again in the meantime: try creating once more
            if draft and failure.status == 422 and "draft pull requests are not supported" in _message(failure).lower():
                draft = False
                continue
            raise self._error(failure, f"create a pull request from {branch!r} into {base!r}", write=True)
        if created is None:
            raise GitHubError(
                f"GitHub: could not create a pull request from {branch!r} into {base!r} in {self.repository}: "
                "GitHub keeps answering that one already exists but lists none open; re-run the workflow",
                status=422,
            )
        info = _info(created)
        if wanted:
            info = self._add_labels(info, wanted)
        return info, "created"

    def update(
        self,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        labels: Iterable[str] = (),
    ) -> PullRequestInfo:
        """Set the title and/or body of pull request `number` (None keeps it) and add `labels`.

        Labels are added, never replaced, so labels people put on the pull request by hand survive a
        re-run. Labels missing from the repository are created by GitHub on the fly.
        """
        if body is not None:
            _check_body(body)
        wanted = _labels(labels)
        pr = self._repo.get_pull(number)  # lazy: no request
        if title is not None or body is not None:
            with self._api(f"update pull request #{number}", write=True):
                pr.edit(title=NotSet if title is None else title, body=NotSet if body is None else body)
                info = _info(pr)
        else:
            with self._api(f"read pull request #{number}", write=False):
                info = _info(pr)
        if wanted:
            info = self._add_labels(info, wanted)
        return info

    def comment(self, number: int, text: str) -> None:
        """Add a conversation comment to pull request `number` (pull requests are issues for comments)."""
        _check_body(text)
        with self._api(f"comment on pull request #{number}", write=True):
            self._repo.get_issue(number).create_comment(text)

    def reviewer_comments(self, number: int) -> list[ReviewerComment]:
        """The conversation comments and the review comments of pull request `number`, oldest first."""
        found: list[ReviewerComment] = []
        with self._api(f"read the comments of pull request #{number}", write=False):
            for index, c in enumerate(self._repo.get_issue(number).get_comments()):
                if index >= MAX_COMMENTS:
                    break
                found.append(ReviewerComment(c.id, "comment", c.body or "", c.user.login if c.user else "",
                                             c.html_url or "", _stamp(c.created_at)))
        with self._api(f"read the review comments of pull request #{number}", write=False):
            for index, r in enumerate(self._repo.get_pull(number).get_review_comments()):
                if index >= MAX_COMMENTS:
                    break
                line = r.line if r.line is not None else r.original_line
                found.append(ReviewerComment(r.id, "review", r.body or "", r.user.login if r.user else "",
                                             r.html_url or "", _stamp(r.created_at), r.path, line))
        return sorted(found, key=lambda c: (c.created_at, c.id))

    def permission(self, login: str) -> str:
        """The account's permission on the repository: admin, write, read or none (GitHub reports a
        maintainer as write and triage as read). An account GitHub does not know (404) has none."""
        with self._api(f"read the permission of {login[:60]!r}", write=False):
            try:
                return str(self._repo.get_collaborator_permission(login) or "none")
            except UnknownObjectException:
                return "none"

    def close(self, number: int, comment: str | None = None) -> PullRequestInfo:
        """Close pull request `number`, first saying why in a comment (if `comment` is not empty).

        The comment goes first so that whoever gets the "closed" notification can already read the reason.
        """
        if comment:
            self.comment(number, comment)
        pr = self._repo.get_pull(number)
        with self._api(f"close pull request #{number}", write=True):
            pr.edit(state="closed")
            return _info(pr)

    # -- helpers -------------------------------------------------------------------------------------

    def _add_labels(self, info: PullRequestInfo, labels: list[str]) -> PullRequestInfo:
        """POST the labels in the `{"labels": [...]}` form GitHub recommends; the answer is the full list."""
        url = f"{self._repo.url}/issues/{info.number}/labels"
        what = f"add labels {', '.join(labels)} to pull request #{info.number}"
        try:
            with self._api(what, write=True):
                _headers, data = self._gh.requester.requestJsonAndCheck("POST", url, input={"labels": labels})
        except GitHubError as exc:
            if exc.status not in (403, 404) or _is_rate_limit_text(str(exc)):
                raise
            reason = f"HTTP {exc.status}"
            warning = (f"GitHub: pull request #{info.number} is fine, but could not {what} ({reason}); "
                       f"{LABELS_HINT}")
            return dataclasses.replace(info, warnings=(*info.warnings, warning))
        names = tuple(item.get("name", "") for item in data or [] if isinstance(item, dict))
        return dataclasses.replace(info, labels=names or tuple(dict.fromkeys([*info.labels, *labels])))

    @contextlib.contextmanager
    def _api(self, action: str, *, write: bool) -> Iterator[None]:
        """Turn PyGithub and network exceptions raised inside into one-line `GitHubError`s."""
        try:
            yield
        except GithubException as exc:
            raise self._error(exc, action, write=write) from None
        except requests.RequestException as exc:
            raise self._network_error(exc, action) from None

    def _network_error(self, exc: requests.RequestException, action: str) -> GitHubError:
        detail = self._scrub(str(exc), limit=160)
        return GitHubError(
            f"GitHub: could not {action} in {self.repository}: no answer from {self.api_url} "
            f"({type(exc).__name__}: {detail}); check the network and the API URL ($GITHUB_API_URL), then re-run"
        )

    def _error(self, exc: GithubException, action: str, *, write: bool) -> GitHubError:
        """One line: what was attempted, the HTTP status with GitHub's message, and what to do about it."""
        status = exc.status
        headers = _lower_keys(exc.headers)
        message = self._scrub(_message(exc)) or "no message"
        what = f"GitHub: could not {action} in {self.repository} (HTTP {status}: {message})"
        accepted = headers.get("x-accepted-github-permissions")
        if status in (403, 429) and _is_rate_limit(exc, headers):
            hint = _rate_limit_hint(headers)
        elif status == 401:
            hint = (
                "the token was rejected (missing, expired or revoked); pass `${{ secrets.GITHUB_TOKEN }}` "
                "or a valid personal access token to the Action"
            )
        elif status == 403 and "not permitted to create or approve pull requests" in message.lower():
            hint = ACTIONS_SETTING_HINT
        elif status == 403:
            needs = f"the token lacks the permission GitHub asks for ({accepted})" if accepted else (
                "the token lacks a permission"
            )
            hint = f"{needs}; {PERMISSIONS_HINT} (a personal access token needs the same rights on this repository)"
        elif status == 404:
            # GitHub answers 404, not 403, when the token may not even see the repository.
            hint = "it does not exist, or the token cannot see it"
            if accepted:
                hint += f" (GitHub asks for {accepted})"
            if write:
                hint += f"; for writes {PERMISSIONS_HINT}"
            hint += " (check the repository name and, for a personal access token, its repository access)"
        elif status == 422:
            details = self._scrub("; ".join(_validation_errors(exc)))
            hint = f"GitHub rejected the request: {details}" if details else "GitHub rejected the request"
            if "field head invalid" in details or "field base invalid" in details:
                hint += " (does the branch exist on the remote? push it first)"
        elif status >= 500:
            hint = "GitHub had a server error; re-run the workflow later"
        else:
            hint = "unexpected answer from GitHub"
        return GitHubError(f"{what}: {hint}", status=status)

    def _scrub(self, text: str, limit: int = 300) -> str:
        """Single-line, bounded, token-free text from a server answer."""
        text = " ".join(str(text).replace(self._token, "[redacted]").split())
        return text if len(text) <= limit else text[: limit - 1] + "…"


# -- module helpers ------------------------------------------------------------------------------------


def _retry_policy(retries: int) -> Retry:
    """Few, short retries: 5xx answers and network errors, on idempotent methods only.

    A plain urllib3 `Retry`, not PyGithub's `GithubRetry`: that one retries 403/429 rate limits and can
    sleep until the limit resets (up to an hour, inside a paid runner). A rate limit is instead reported
    at once, with when to re-run. Retry-After is not obeyed on 5xx either, for the same reason.
    """
    return Retry(
        total=retries,
        backoff_factor=0.5,
        backoff_max=4,
        status_forcelist=[500, 502, 503, 504],
        allowed_methods=frozenset({"GET", "HEAD", "PATCH", "PUT", "DELETE"}),  # not POST: see module docstring
        respect_retry_after_header=False,
        raise_on_status=False,  # hand the last answer to PyGithub, which turns it into a GithubException
    )


def _info(pr: PullRequest) -> PullRequestInfo:
    return PullRequestInfo(
        number=pr.number,
        url=pr.html_url,
        head=pr.head.ref,
        base=pr.base.ref,
        title=pr.title or "",
        body=pr.body or "",
        state=pr.state,
        user_login=pr.user.login if pr.user is not None else "",
        draft=bool(pr.draft),
        labels=tuple(label.name for label in pr.labels or []),
    )


def _stamp(value: datetime | None) -> str:
    """A GitHub timestamp as `2026-01-05T09:00:00Z`."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_body(text: str) -> None:
    """A body GitHub would refuse is a caller bug (the report renderer must trim): fail before sending."""
    if len(text) > MAX_BODY_CHARS:
        raise ValueError(f"text is {len(text)} characters; GitHub accepts at most {MAX_BODY_CHARS}")


def _labels(labels: Iterable[str]) -> list[str]:
    """Labels without blanks or repeats, in the given order."""
    if isinstance(labels, str):  # a lone string would otherwise become one label per character
        labels = [labels]
    return list(dict.fromkeys(label.strip() for label in labels if label and label.strip()))


def _lower_keys(headers: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def _message(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    if isinstance(data, (bytes, str)):
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return exc.message or ""


def _validation_errors(exc: GithubException) -> list[str]:
    """GitHub's `errors[]` as text: the `message` when there is one, else `resource field X code`."""
    data = exc.data if isinstance(exc.data, dict) else {}
    texts: list[str] = []
    for error in data.get("errors") or []:
        if isinstance(error, str):
            texts.append(error)
        elif isinstance(error, dict):
            if error.get("message"):
                texts.append(str(error["message"]))
            else:
                parts = [str(error.get("resource") or "")]
                if error.get("field"):
                    parts.append(f"field {error['field']}")
                parts.append(str(error.get("code") or "invalid"))
                texts.append(" ".join(p for p in parts if p))
    return texts


def _is_already_exists(exc: GithubException) -> bool:
    return exc.status == 422 and any("pull request already exists" in t.lower() for t in _validation_errors(exc))


def _is_rate_limit(exc: GithubException, headers: Mapping[str, str]) -> bool:
    message = _message(exc).lower()
    return (
        isinstance(exc, RateLimitExceededException)
        or headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in message
    )


def _is_rate_limit_text(message: str) -> bool:
    return "rate limited" in message


def _rate_limit_hint(headers: Mapping[str, str]) -> str:
    """When the limit lifts, from Retry-After or X-RateLimit-Reset, and what to do meanwhile."""
    when = ""
    retry_after = headers.get("retry-after", "")
    reset = headers.get("x-ratelimit-reset", "")
    if retry_after.isdigit():
        when = f"GitHub asks to wait {int(retry_after)} s"
    elif reset.isdigit():
        at = datetime.fromtimestamp(int(reset), timezone.utc)
        when = f"the limit resets at {at:%H:%M} UTC"
    prefix = f"rate limited ({when})" if when else "rate limited"
    return f"{prefix}; re-run the workflow later, or run it less often"
