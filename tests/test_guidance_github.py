"""What guidance reads from GitHub, through PyGithub over real HTTP against the fake: conversation and
review comments of a pull request (with path and line), and each author's permission."""
# ruff: noqa: F811 - the fixtures of test_github are imported and named by the tests' arguments

from __future__ import annotations

from fakes.github_server import FakeGitHub
from test_github import BRANCH, REPO, fake, origin, prs  # noqa: F401 - fixtures

from gepa_action.github import PullRequests


def test_comments_of_both_kinds_come_back_oldest_first(fake: FakeGitHub, prs: PullRequests) -> None:
    number = fake.add_pull(REPO, BRANCH, body="<!-- gepa-tune -->")
    first = fake.add_comment(REPO, number, "/gepa-tune one label", "alice")
    review = fake.add_review_comment(REPO, number, "/gepa-tune forbid /x/", "carol", "prompt.j2", 1)
    last = fake.add_comment(REPO, number, "thanks", "bob")
    found = prs.reviewer_comments(number)
    assert [(c.kind, c.id, c.author) for c in found] == [
        ("comment", first["id"], "alice"), ("review", review["id"], "carol"), ("comment", last["id"], "bob")]
    assert (found[1].path, found[1].line, found[1].url) == ("prompt.j2", 1, review["html_url"])
    assert found[0].created_at.endswith("Z") and found[0].body == "/gepa-tune one label"


def test_permissions_as_github_reports_them(fake: FakeGitHub, prs: PullRequests) -> None:
    for user, role in (("root", "admin"), ("mia", "maintain"), ("wes", "write"), ("tri", "triage"),
                       ("gone", "none")):
        fake.set_permission(REPO, user, role)
    assert [prs.permission(u) for u in ("root", "mia", "wes", "tri", "gone", "stranger")] == [
        "admin", "write", "write", "read", "none", "read"]
    assert fake.calls("GET", r"/collaborators/mia/permission$")[0].status == 200
