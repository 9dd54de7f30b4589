"""Turn the comments on the open gepa-tune pull request into the guidance of the next run.

Only `/gepa-tune` comments from accounts with write access count (GitHub's collaborator permission:
admin, maintain or write); every other command comment is kept as *ignored*, with the reason, so the job
summary and the pull request say why it had no effect. The text is never interpreted beyond the command
syntax (guidance/commands.py): it is data for the reflection model, not instructions to the tool.

Comments are applied oldest first, and the result depends only on the comments and the committed file,
so a run that reads the same comments again (they stay on the pull request) gets the same guidance:
an item already in `gepa.guidance.yaml` is not added twice (its id is the comment's id), and a
`/gepa-tune drop ID` removes it again each time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import looks_like_secret, redact_secrets
from .github import WRITE_PERMISSIONS, ReviewerComment
from .guidance.commands import parse_command
from .guidance.items import MAX_ITEMS, Guidance, Ignored, Item, Source

#: How much of an ignored comment's text is kept to show (the reason matters, not the text).
IGNORED_TEXT = 200


@dataclass
class Synced:
    """The guidance of every task after the comments, and each run task's `Guidance` for this run."""

    items: dict[str, tuple[Item, ...]]
    per_task: dict[str, Guidance]
    changed: bool = False
    ignored: list[Ignored] = field(default_factory=list)


def sync(current: Mapping[str, Sequence[Item]], comments: Sequence[ReviewerComment],
         permission: Callable[[str], str], tasks: Mapping[str, set[str]]) -> Synced:
    """Apply `comments` (oldest first) to the committed guidance `current` (task -> items).

    `tasks` maps each task of this run to the repository paths of its templates (a review comment on a
    template steers the tasks that use it); `permission(login)` asks GitHub once per author."""
    items = {name: list(values) for name, values in current.items()}
    for name in tasks:
        items.setdefault(name, [])
    committed = {name: {item.id for item in values} for name, values in current.items()}
    ignored: dict[str, list[Ignored]] = {name: [] for name in tasks}
    new: dict[str, list[str]] = {name: [] for name in tasks}
    dropped: dict[str, list[str]] = {name: [] for name in tasks}
    access: dict[str, str] = {}
    everywhere: list[Ignored] = []

    def ignore(comment: ReviewerComment, reason: str, targets: Sequence[str] = ()) -> None:
        entry = Ignored(comment.author, comment.url, reason, redact_secrets(comment.body[:IGNORED_TEXT]))
        everywhere.append(entry)
        for name in targets or tasks:
            ignored[name].append(entry)

    for comment in comments:
        command = parse_command(comment.body)
        if command is None:
            continue
        if comment.author not in access:
            access[comment.author] = permission(comment.author) if comment.author else "none"
        if access[comment.author] not in WRITE_PERMISSIONS:
            ignore(comment, f"{comment.author or 'an unknown account'} has {access[comment.author]} access; "
                            "only accounts with write access steer the run")
            continue
        if command.kind == "invalid":
            ignore(comment, command.problem or "not a command gepa-tune knows")
            continue
        if looks_like_secret(command.text):  # it would be committed, prompted and shown: never
            ignore(comment, "the comment holds something shaped like an API key or token, so it is not used "
                            "(delete the comment and revoke the key)")
            continue
        targets = _targets(comment, command.task, tasks)
        if isinstance(targets, str):
            ignore(comment, targets)
            continue
        item_id = f"{comment.kind}-{comment.id}"
        for name in targets:
            if command.kind == "drop":
                gone = [i for i in command.ids if any(item.id == i for item in items[name])]
                items[name] = [item for item in items[name] if item.id not in command.ids]
                new[name] = [i for i in new[name] if i not in command.ids]
                dropped[name].extend(i for i in gone if i not in dropped[name])
            elif any(item.id == item_id for item in items[name]):
                continue  # already committed (the comment is read again on every run)
            elif len(items[name]) >= MAX_ITEMS:
                ignore(comment, f"task {name} already has {MAX_ITEMS} items; retire some with "
                                "`/gepa-tune drop ID` first", [name])
            else:
                review = comment.kind == "review"
                source = Source("review", comment.path, comment.line) if review else Source("comment")
                items[name].append(Item(item_id, command.text, comment.author, comment.url, source,
                                        comment.created_at, command.rule))
                if item_id not in committed.get(name, set()):
                    new[name].append(item_id)
    result = {name: tuple(values) for name, values in items.items() if values or name in current}
    changed = {n: tuple(v) for n, v in current.items() if v} != {n: v for n, v in result.items() if v}
    per_task = {name: Guidance(items=result.get(name, ()), ignored=tuple(ignored[name]), new=tuple(new[name]),
                               dropped=tuple(dropped[name])) for name in tasks}
    return Synced(result, per_task, changed, everywhere)


def _targets(comment: ReviewerComment, task: str | None, tasks: Mapping[str, set[str]]) -> list[str] | str:
    """The tasks a comment is for, or why it is for none of this run's."""
    if task is not None:
        return [task] if task in tasks else f"no task named {task!r} in this pull request"
    if comment.kind == "review":
        found = [name for name, paths in tasks.items() if comment.path in paths]
        return found or f"{comment.path or 'the file'} is not a template of the tasks in this pull request"
    return list(tasks)
