"""`gepa.guidance.yaml`: reviewer guidance kept beside gepa.yaml, reviewable like code.

The Action writes it in the same commit as the evolved templates, so what reviewers asked for outlives
the pull request; `gepa-tune tune` reads it too. People may edit it like any file (delete an item to
retire it), so it is read as strictly as gepa.yaml: a bad value is one line naming the file, the line,
the key and the fix.

    tasks:
      route:
        - id: c1234
          text: never promise refunds
          author: alice
          url: https://github.com/octo/prompts/pull/7#issuecomment-1234
          source: comment                  # or: review (with path: and line:)
          created_at: "2026-01-05T09:00:00Z"
          rule: {forbid: 'refund'}         # optional: forbid or require, and ignore_case: true
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import InputError
from ..yamlsrc import Doc, Section, load_yaml
from .items import ID_PATTERN, MAX_ITEMS, MAX_TEXT, RULE_KINDS, Item, Rule, Source
from .rules import rule_problem

FILE_NAME = "gepa.guidance.yaml"
_HEADER = ("# Reviewer guidance for gepa-tune: `/gepa-tune ...` comments on its pull requests, kept for every\n"
           "# later run. Retire an item with a `/gepa-tune drop ID` comment, or delete it here in a commit.\n")
_ITEM_KEYS = ("id", "text", "author", "url", "source", "path", "line", "created_at", "rule")


def path_for(config_file: Path) -> Path:
    """The guidance file of a workspace: beside its gepa.yaml."""
    return config_file.parent / FILE_NAME


def load(path: Path, display: str, task_names: list[str]) -> dict[str, tuple[Item, ...]]:
    """Task name -> its items; an absent file is no guidance. Every problem is an `InputError`."""
    if not path.exists() and not path.is_symlink():
        return {}
    doc = load_yaml(path, display)
    if doc.data is None:
        return {}
    return parse(doc, task_names)


def parse(doc: Doc, task_names: list[str]) -> dict[str, tuple[Item, ...]]:
    if not isinstance(doc.data, dict):
        raise InputError(doc.file, "expected a mapping with 'tasks'", line=1,
                         hint="start the file with `tasks:` and one list of items per task")
    top = doc.section()
    top.check_keys(("tasks",))
    tasks = top.child("tasks")
    if tasks is None:
        return {}
    result: dict[str, tuple[Item, ...]] = {}
    for name in tasks.data:
        if name not in task_names:
            raise tasks.error(name, f"no task named '{name}' in gepa.yaml",
                              hint="rename the entry to an existing task, or delete it")
        raw = tasks.get(name, list, [])
        if len(raw) > MAX_ITEMS:
            raise tasks.error(name, f"{len(raw)} items; at most {MAX_ITEMS} per task",
                              hint="retire the items that no longer matter (delete them)")
        items = tuple(_item(Section(doc, (*tasks.path, name, index), value) if isinstance(value, dict)
                            else _not_mapping(tasks, name, index, value)) for index, value in enumerate(raw))
        ids = [item.id for item in items]
        for index, item_id in enumerate(ids):
            if item_id in ids[:index]:
                raise doc.error(("tasks", name, index, "id"), f"id '{item_id}' appears twice",
                                hint="give each item its own id")
        result[str(name)] = items
    return result


def _not_mapping(tasks: Section, name: str, index: int, value: object) -> Item:
    raise tasks.doc.error((*tasks.path, name, index), f"expected a mapping (id, text, author, ...), got "
                          f"{type(value).__name__}", hint="write each item as `- id: ...` with its keys")


def _item(section: Section) -> Item:
    section.check_keys(_ITEM_KEYS)
    item_id = section.get("id", str, required=True)
    if not ID_PATTERN.fullmatch(item_id):
        raise section.error("id", f"'{item_id[:50]}' is not an id", hint="use 1-40 letters, digits, '_' or '-'")
    text = section.get("text", str, required=True)
    if not text.strip() or len(text) > MAX_TEXT + 100:
        raise section.error("text", "empty" if not text.strip() else f"{len(text)} characters; at most {MAX_TEXT}",
                            hint="say the guidance in one or two sentences")
    kind = section.choice("source", ("comment", "review"), "comment")
    line = section.number("line", None, minimum=1, integer=True)
    source = Source(kind, section.get("path", str), int(line) if line is not None else None)
    return Item(id=item_id, text=text, author=section.get("author", str, "") or "",
                url=section.get("url", str, "") or "", source=source,
                created_at=str(section.get("created_at", (str, int, float), "") or ""),
                rule=_rule(section))


def _rule(section: Section) -> Rule | None:
    rule_section = section.child("rule")
    if rule_section is None:
        return None
    rule_section.check_keys((*RULE_KINDS, "ignore_case"))
    kinds = [k for k in RULE_KINDS if rule_section.has(k)]
    if len(kinds) != 1:
        raise rule_section.error(None, "needs exactly one of 'forbid' or 'require'",
                                 hint="write `rule: {forbid: 'PATTERN'}` or `rule: {require: 'PATTERN'}`")
    rule = Rule(kinds[0], rule_section.get(kinds[0], str, required=True),
                bool(rule_section.get("ignore_case", bool, False)))
    problem = rule_problem(rule, probe=False)
    if problem is not None:
        raise rule_section.error(kinds[0], problem,
                                 hint="fix the pattern (in YAML, single-quote it so backslashes stay as written)")
    return rule


def dumps(guidance: dict[str, tuple[Item, ...]]) -> str:
    """The file's text: tasks and items in a stable order, so a commit shows only what changed."""
    data = {"tasks": {name: [_item_data(item) for item in items]
                      for name, items in sorted(guidance.items()) if items}}
    if not data["tasks"]:
        data = {"tasks": {}}
    return _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


def _item_data(item: Item) -> dict[str, object]:
    data: dict[str, object] = {"id": item.id, "text": item.text, "author": item.author, "url": item.url,
                               "source": item.source.kind}
    if item.source.path is not None:
        data["path"] = item.source.path
    if item.source.line is not None:
        data["line"] = item.source.line
    data["created_at"] = item.created_at
    if item.rule is not None:
        rule: dict[str, object] = {item.rule.kind: item.rule.pattern}
        if item.rule.ignore_case:
            rule["ignore_case"] = True
        data["rule"] = rule
    return data
