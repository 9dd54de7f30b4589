"""Issue operations for the drift watch, on the same PyGithub connection as the pull requests.

The watch needs five calls: find its open issue (by label, then by its marker in the body), open one,
edit its body, comment, and close it. They share `PullRequests`' connection, retry policy, token
scrubbing and one-line error wording, so a missing `issues: write` permission reads like a missing
`pull-requests: write` one does.

Why a marker and a label both: the label makes the look-up one filtered request (GitHub's issue list
also returns pull requests, which are skipped), and the marker, an HTML comment in the body, tells the
watch's own issue from one a person filed under the same label. The marker names the workspace, so two
workspaces in one repository keep one issue each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from github import GithubException
from github.GithubObject import NotSet
from github.Issue import Issue

from .github import PERMISSIONS_HINT, GitHubError, PullRequests, _check_body, _labels

ISSUES_HINT = "the workflow needs `permissions: issues: write`"


@dataclasses.dataclass(frozen=True)
class IssueInfo:
    """What the watch needs to know about an issue, detached from PyGithub's lazy objects."""

    number: int
    url: str
    title: str
    body: str
    state: str
    labels: tuple[str, ...] = ()


class Issues(PullRequests):
    """The issues of one repository, as the drift watch uses them (see the module docstring)."""

    def find_marked(self, label: str, marker: str) -> IssueInfo | None:
        """The oldest open issue labelled `label` whose body holds `marker` (pull requests skipped)."""
        with self._api(f"list the open issues labelled {label!r}", write=False):
            found = [issue for issue in self._repo.get_issues(state="open", labels=[label], sort="created",
                                                              direction="asc")
                     if issue.pull_request is None and marker in (issue.body or "")]
            return _info(found[0]) if found else None

    def open_issue(self, *, title: str, body: str, labels: Iterable[str]) -> IssueInfo:
        """Open an issue with `labels` (GitHub creates a label that does not exist yet)."""
        _check_body(body)
        wanted = _labels(labels)
        with self._api("open an issue", write=True):
            return _info(self._repo.create_issue(title=title, body=body, labels=wanted or NotSet))

    def edit_issue(self, number: int, *, title: str | None = None, body: str | None = None) -> IssueInfo:
        if body is not None:
            _check_body(body)
        issue = self._repo.get_issue(number)  # lazy: no request
        with self._api(f"edit issue #{number}", write=True):
            issue.edit(title=NotSet if title is None else title, body=NotSet if body is None else body)
            return _info(issue)

    def comment_issue(self, number: int, text: str) -> None:
        _check_body(text)
        with self._api(f"comment on issue #{number}", write=True):
            self._repo.get_issue(number).create_comment(text)

    def close_issue(self, number: int, comment: str | None = None, *, reason: str = "completed") -> IssueInfo:
        """Close issue `number` (`reason`: completed or not_planned), first saying why in a comment."""
        if comment:
            self.comment_issue(number, comment)
        issue = self._repo.get_issue(number)
        with self._api(f"close issue #{number}", write=True):
            issue.edit(state="closed", state_reason=reason)
            return _info(issue)

    def _error(self, exc: GithubException, action: str, *, write: bool) -> GitHubError:
        """The pull requests' wording, with the permission issues need (not the pull requests' ones)."""
        error = super()._error(exc, action, write=write)
        return GitHubError(str(error).replace(PERMISSIONS_HINT, ISSUES_HINT), status=error.status)


def _info(issue: Issue) -> IssueInfo:
    return IssueInfo(number=issue.number, url=issue.html_url, title=issue.title or "", body=issue.body or "",
                     state=issue.state, labels=tuple(label.name for label in issue.labels or []))
