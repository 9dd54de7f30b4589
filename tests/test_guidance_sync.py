"""Comments to guidance (guidance_sync.sync): who counts, which task a comment is for, retiring items,
the size cap, and that reading the same comments again changes nothing."""

from __future__ import annotations

from gepa_action.github import ReviewerComment
from gepa_action.guidance.items import MAX_ITEMS
from gepa_action.guidance_sync import sync

TASKS = {"route": {"prompts/system.j2", "prompts/user.j2"}, "summarize": {"prompts/summary.j2"}}
ROLES = {"alice": "write", "root": "admin", "bob": "read", "eve": "none"}


def comment(n: int, body: str, author: str = "alice", *, path: str | None = None) -> ReviewerComment:
    kind = "review" if path else "comment"
    return ReviewerComment(n, kind, body, author, f"https://github.com/o/r/pull/1#{kind}-{n}",
                           f"2026-01-01T00:00:{n:02d}Z", path, 3 if path else None)


def permission_log() -> tuple[list[str], object]:
    asked: list[str] = []

    def permission(login: str) -> str:
        asked.append(login)
        return ROLES.get(login, "none")

    return asked, permission


def test_who_counts_and_which_task_a_comment_is_for() -> None:
    asked, permission = permission_log()
    result = sync({}, [
        comment(1, "/gepa-tune answer with one label"),
        comment(2, "/gepa-tune forbid /refund/", "root", path="prompts/system.j2"),
        comment(3, "/gepa-tune task: summarize keep it short"),
        comment(4, "/gepa-tune do what I say", "bob"),
        comment(5, "/gepa-tune me too", "bob"),
        comment(6, "/gepa-tune on a file no task uses", path="README.md"),
        comment(7, "/gepa-tune task: nope x"),
        comment(8, "thanks!", "eve"),
    ], permission, TASKS)
    assert sorted(asked) == ["alice", "bob", "root"], "once per author, and only for command comments"
    assert [i.id for i in result.items["route"]] == ["comment-1", "review-2"]
    assert [i.id for i in result.items["summarize"]] == ["comment-1", "comment-3"]
    review = result.items["route"][1]
    assert review.source.path == "prompts/system.j2" and review.rule is not None and review.rule.kind == "forbid"
    reasons = [i.reason for i in result.per_task["route"].ignored]
    assert reasons[0] == "bob has read access; only accounts with write access steer the run"
    assert "README.md is not a template of the tasks in this pull request" in reasons
    assert "no task named 'nope' in this pull request" in reasons
    assert result.changed and result.per_task["route"].new == ("comment-1", "review-2")


def test_reading_the_same_comments_again_changes_nothing_and_drop_retires() -> None:
    _, permission = permission_log()
    comments = [comment(1, "/gepa-tune a"), comment(2, "/gepa-tune b")]
    first = sync({}, comments, permission, TASKS)
    again = sync(first.items, comments, permission, TASKS)
    assert again.items == first.items and not again.changed and again.per_task["route"].new == ()
    dropped = sync(first.items, [*comments, comment(3, "/gepa-tune drop comment-1")], permission, TASKS)
    assert [i.id for i in dropped.items["route"]] == ["comment-2"] and dropped.per_task["route"].dropped == (
        "comment-1",)
    assert dropped.changed


def test_a_task_keeps_at_most_max_items() -> None:
    _, permission = permission_log()
    comments = [comment(n, f"/gepa-tune rule {n}") for n in range(1, MAX_ITEMS + 3)]
    result = sync({}, comments, permission, {"route": TASKS["route"]})
    assert len(result.items["route"]) == MAX_ITEMS
    assert len(result.per_task["route"].ignored) == 2
    assert "already has 20 items" in result.per_task["route"].ignored[0].reason


def test_a_comment_holding_a_key_is_never_used_nor_kept() -> None:
    _, permission = permission_log()
    key = "sk-proj-" + "Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
    result = sync({}, [comment(1, f"/gepa-tune use the key {key} for calls")], permission, TASKS)
    assert not result.items.get("route") and not result.changed
    [ignored] = result.per_task["route"].ignored
    assert "shaped like an API key" in ignored.reason and key not in ignored.text
