"""The fake GitHub's issues: list (with pull requests among them, as GitHub does), create, get, edit.

Mixed into `FakeGitHub`; its route table takes `ISSUE_ROUTES`. Comments on an issue go through the
server's `issues/{n}/comments` routes, which accept issue numbers as well as pull-request numbers.

GitHub's behaviour kept here: issues and pull requests share one number sequence; `GET /issues` lists
both (a pull request carries a `pull_request` key) and filters `state` (open|closed|all, default open),
`labels` (comma-separated names, every one must be on the item, case-insensitively), `sort`
(created|updated|comments) and `direction`; `POST /issues` needs a `title` and creates labels it does not
know; `PATCH /issues/{n}` takes `state_reason` only as completed, not_planned, reopened or null, sets
`closed_at` on closing, and `labels` replaces the set. Pull requests answer `GET /issues/{n}` too.
"""

from __future__ import annotations

import re
from typing import Any

from fakes.github_rules import Refusal, check_payload, error_body, invalid, validation_failed
from fakes.github_state import Repo

_REPO = r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)"
ISSUE_ROUTES: list[tuple[str, re.Pattern[str], str, list[dict[str, str]]]] = [
    ("GET", re.compile(_REPO + r"/issues"), "_list_issues", [{"issues": "read"}]),
    ("POST", re.compile(_REPO + r"/issues"), "_create_issue", [{"issues": "write"}]),
    ("GET", re.compile(_REPO + r"/issues/(?P<n>\d+)"), "_get_issue", [{"issues": "read"}]),
    ("PATCH", re.compile(_REPO + r"/issues/(?P<n>\d+)"), "_update_issue", [{"issues": "write"}]),
]
CREATE_ISSUE_FIELDS: dict[str, type] = {"title": str, "body": str, "assignee": str, "milestone": int,
                                        "labels": list, "assignees": list, "type": str}
UPDATE_ISSUE_FIELDS: dict[str, type] = {"title": str, "body": str, "assignee": str, "state": str,
                                        "state_reason": str, "milestone": int, "labels": list, "assignees": list}
STATE_REASONS = ("completed", "not_planned", "reopened")


class IssueRoutes:
    """Route handlers and state helpers for issues; needs the `FakeGitHub` it is mixed into."""

    # provided by FakeGitHub
    _repo: Any
    _lock: Any
    _now: Any
    _id: Any
    _paginate: Any
    _attach_label: Any
    _check_body: Any
    _user_json: Any
    _pull_json: Any
    url: str
    web_url: str
    login: str

    # -- seeding and reading -------------------------------------------------------------------------

    def add_issue(self, full_name: str, title: str, body: str = "", *, user: str = "octocat",
                  labels: tuple[str, ...] = (), state: str = "open") -> int:
        """Seed an issue (as `user` would file it) and return its number."""
        with self._lock:
            repo = self._repo(full_name)
            issue = self._new_issue(repo, title, body, user)
            for name in labels:
                self._attach_label(repo, issue, name)
            if state == "closed":
                issue["state"], issue["closed_at"], issue["state_reason"] = "closed", self._now(), "completed"
            return int(issue["number"])

    def issues(self, full_name: str) -> list[dict[str, Any]]:
        """Every issue (not pull request) of the repository, open and closed, as the API renders it."""
        with self._lock:
            repo = self._repo(full_name)
            return [self._issue_json(repo, i) for _, i in sorted(repo.issues.items())]

    # -- routes ----------------------------------------------------------------------------------------

    def _list_issues(self, repo: Repo, _n: int | None, q: dict[str, str], _p: Any) -> tuple[int, Any, dict[str, str]]:
        state = q.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise validation_failed({"resource": "Issue", "field": "state", "code": "invalid"})
        items = [("issue", i) for i in repo.issues.values()] + [("pull", p) for p in repo.pulls.values()]
        items = [(kind, i) for kind, i in items if state == "all" or i["state"] == state]
        wanted = [name.strip().lower() for name in q.get("labels", "").split(",") if name.strip()]
        if wanted:
            items = [(kind, i) for kind, i in items if all(w in {n.lower() for n in i["labels"]} for w in wanted)]
        sort = q.get("sort", "created")
        if sort not in ("created", "updated", "comments"):
            raise validation_failed({"resource": "Issue", "field": "sort", "code": "invalid"})
        descending = q.get("direction", "desc") != "asc"

        def key(item: tuple[str, dict[str, Any]]) -> tuple[Any, int]:
            value = len(repo.comments.get(item[1]["number"], [])) if sort == "comments" else item[1][f"{sort}_at"]
            return (value, item[1]["number"])

        items.sort(key=key, reverse=descending)
        rendered = [self._issue_json(repo, i) if kind == "issue" else self._pull_as_issue(repo, i) for kind, i in items]
        return self._paginate(f"/repos/{repo.full_name}/issues", q, rendered)

    def _create_issue(self, repo: Repo, _n: int | None, _q: dict[str, str], p: Any) -> tuple[int, Any, dict[str, str]]:
        payload = check_payload(p, CREATE_ISSUE_FIELDS, required=("title",))
        if not payload["title"].strip():
            raise validation_failed({"resource": "Issue", "code": "missing_field", "field": "title"})
        body = payload.get("body", "")
        self._check_body(body)
        names = self._label_names(payload.get("labels", []))
        issue = self._new_issue(repo, payload["title"], body, self.login)
        for name in names:
            self._attach_label(repo, issue, name)
        rendered = self._issue_json(repo, issue)
        return 201, rendered, {"Location": rendered["url"]}

    def _get_issue(self, repo: Repo, n: int | None, _q: dict[str, str], _p: Any) -> tuple[int, Any, dict[str, str]]:
        if n in repo.issues:
            return 200, self._issue_json(repo, repo.issues[n]), {}
        if n in repo.pulls:
            return 200, self._pull_as_issue(repo, repo.pulls[n]), {}
        raise Refusal(404, error_body(404))

    def _update_issue(self, repo: Repo, n: int | None, _q: dict[str, str], p: Any) -> tuple[int, Any, dict[str, str]]:
        issue = repo.issues.get(n or 0)
        if issue is None:
            raise Refusal(404, error_body(404))
        if isinstance(p, dict) and p.get("state_reason", "") is None:
            p = {k: v for k, v in p.items() if k != "state_reason"}  # null is allowed: no reason
        payload = check_payload(p, UPDATE_ISSUE_FIELDS)
        if "title" in payload and not payload["title"].strip():
            raise validation_failed({"resource": "Issue", "code": "missing_field", "field": "title"})
        if "body" in payload:
            self._check_body(payload["body"])
        state = payload.get("state", issue["state"])
        if state not in ("open", "closed"):
            raise validation_failed({"resource": "Issue", "field": "state", "code": "invalid"})
        reason = payload.get("state_reason")
        if reason is not None and reason not in STATE_REASONS:
            raise invalid(f'For \'properties/state_reason\', "{reason}" is not one of {list(STATE_REASONS)}.')
        for key in ("title", "body"):
            if key in payload:
                issue[key] = payload[key]
        if "labels" in payload:
            issue["labels"] = []
            for name in self._label_names(payload["labels"]):
                self._attach_label(repo, issue, name)
        if state != issue["state"]:  # GitHub ignores state_reason unless the state changes
            issue["state"] = state
            issue["closed_at"] = self._now() if state == "closed" else None
            issue["state_reason"] = (reason or "completed") if state == "closed" else (reason or "reopened")
        issue["updated_at"] = self._now()
        return 200, self._issue_json(repo, issue), {}

    # -- helpers ---------------------------------------------------------------------------------------

    def _label_names(self, raw: Any) -> list[str]:
        names = []
        for item in raw:
            if isinstance(item, dict):
                item = check_payload(item, {"name": str}, required=("name",))["name"]
            if not isinstance(item, str):
                raise invalid(f"For 'items', {item!r} is not a string.")
            if not item.strip() or len(item) > 50:
                raise validation_failed({"resource": "Label", "field": "name", "code": "invalid"})
            names.append(item)
        return names

    def _new_issue(self, repo: Repo, title: str, body: str, user: str) -> dict[str, Any]:
        number = repo.next_number
        repo.next_number += 1
        now = self._now()
        issue = {"id": self._id(), "number": number, "state": "open", "state_reason": None, "title": title,
                 "body": body, "user": user, "labels": [], "created_at": now, "updated_at": now, "closed_at": None}
        repo.issues[number] = issue
        return issue

    def _issue_json(self, repo: Repo, issue: dict[str, Any]) -> dict[str, Any]:
        api = f"{self.url}/repos/{repo.full_name}"
        n = issue["number"]
        return {
            "id": issue["id"],
            "node_id": f"I_fake{issue['id']}",
            "url": f"{api}/issues/{n}",
            "repository_url": api,
            "labels_url": f"{api}/issues/{n}/labels{{/name}}",
            "comments_url": f"{api}/issues/{n}/comments",
            "events_url": f"{api}/issues/{n}/events",
            "html_url": f"{self.web_url}/{repo.full_name}/issues/{n}",
            "number": n,
            "state": issue["state"],
            "state_reason": issue["state_reason"],
            "title": issue["title"],
            "body": issue["body"] or None,
            "user": self._user_json(issue["user"]),
            "labels": [dict(repo.labels[name.lower()]) for name in issue["labels"]],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "comments": len(repo.comments.get(n, [])),
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "closed_at": issue["closed_at"],
            "author_association": "NONE",
        }

    def _pull_as_issue(self, repo: Repo, pull: dict[str, Any]) -> dict[str, Any]:
        """A pull request in the issues API: the issue fields plus a `pull_request` object."""
        rendered = self._pull_json(repo, pull)
        data = {key: rendered[key] for key in ("id", "number", "state", "title", "body", "user", "labels",
                                               "created_at", "updated_at", "closed_at", "locked", "comments")}
        api = f"{self.url}/repos/{repo.full_name}"
        n = pull["number"]
        data.update({"node_id": f"I_fakepr{pull['id']}", "url": f"{api}/issues/{n}", "repository_url": api,
                     "html_url": rendered["html_url"], "comments_url": f"{api}/issues/{n}/comments",
                     "state_reason": None, "assignee": None, "assignees": [], "milestone": None,
                     "author_association": rendered["author_association"],
                     "pull_request": {"url": rendered["url"], "html_url": rendered["html_url"],
                                      "diff_url": rendered["diff_url"], "patch_url": rendered["patch_url"],
                                      "merged_at": None}})
        return data
