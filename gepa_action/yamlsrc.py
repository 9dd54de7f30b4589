"""YAML that remembers where each value came from, so every config error can name its line.

PyYAML's `safe_load` forgets positions and silently keeps the last of two duplicate keys. Here the
document is composed into nodes first and converted by hand: each value's line is recorded under its
key path, and a duplicate key is an error.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, looks_like_secret

SECRET_HINT = ("remove it from the file (and revoke it if it was committed); export it in an environment "
               "variable and set lm.api_key_env to that variable's NAME")

KeyPath = tuple[str | int, ...]


def format_key(path: KeyPath) -> str:
    """Render a key path the way a user would point at it: `tasks[0].metric.type`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Doc:
    """A parsed YAML file: plain data plus the 1-based line of every key path."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: KeyPath, message: str, hint: str | None = None) -> InputError:
        return InputError(self.file, message, line=self.line(path), key=format_key(path) or None, hint=hint)

    def section(self, path: KeyPath = ()) -> Section:
        value = self.data
        for part in path:
            value = value[part]
        return Section(self, tuple(path), value)


#: Limits that keep a hostile YAML file from exhausting the machine: nesting depth, and the number of
#: values that aliases add when they are expanded (nine nested aliases of nine items are a billion).
MAX_DEPTH = 64
MAX_ALIAS_VALUES = 100_000

_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in
                        ("str", "int", "float", "bool", "null", "map", "seq", "timestamp"))


class _Budget:
    """Counts the values aliases add across one document, so their expansion cannot grow without bound."""

    def __init__(self) -> None:
        self.alias_values = 0
        self.converted: set[int] = set()
        self.active: set[int] = set()


def _convert(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str,
             budget: _Budget | None = None, depth: int = 0, copying: bool = False) -> Any:
    budget = budget or _Budget()
    line = node.start_mark.line + 1
    copying = copying or id(node) in budget.converted  # a node met again is an alias being expanded
    budget.converted.add(id(node))
    if copying:
        budget.alias_values += 1
        if budget.alias_values > MAX_ALIAS_VALUES:
            raise InputError(file, f"aliases (*name) expand to more than {MAX_ALIAS_VALUES:,} values",
                             line=line, hint="write the values out, or use fewer aliases")
    if depth > MAX_DEPTH:
        raise InputError(file, f"values are nested more than {MAX_DEPTH} levels deep", line=line,
                         hint="flatten the structure")
    if node.tag not in _PLAIN_TAGS:
        raise InputError(file, f"the YAML tag '{node.tag.replace('tag:yaml.org,2002:', '!!')}' is not supported",
                         line=line, key=format_key(path) or None,
                         hint="remove the tag (the part starting with '!'); quote the value if it is text")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in budget.active:
            raise InputError(file, "an alias refers to the value that contains it", line=line,
                             key=format_key(path) or None, hint="remove the recursive alias (*name)")
        budget.active.add(id(node))
        try:
            return _convert_collection(node, path, lines, file, budget, depth, copying)
        finally:
            budget.active.discard(id(node))
    lines.setdefault(path, line)
    try:
        return _SCALAR_LOADER.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:  # e.g. a timestamp like 2024-13-45
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "digits" in problem:
            problem = "a number has thousands of digits"
        raise InputError(file, f"invalid value: {problem}", line=line, key=format_key(path) or None,
                         hint="quote the value to keep it as text") from None


def _convert_collection(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str, budget: _Budget,
                        depth: int, copying: bool) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError(file, "a mapping key must be a plain value", line=key_node.start_mark.line + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise InputError(file, "YAML merge keys (<<) are not supported", line=key_node.start_mark.line + 1)
            key = yaml.SafeLoader.construct_scalar(_SCALAR_LOADER, key_node)
            if key in out:
                raise InputError(
                    file,
                    f"duplicate key '{key}'",
                    line=key_node.start_mark.line + 1,
                    key=format_key(path) or None,
                    hint="keep only one of them",
                )
            child = (*path, str(key))
            lines[child] = key_node.start_mark.line + 1
            out[str(key)] = _convert(value_node, child, lines, file, budget, depth + 1, copying)
        return out
    return [_convert(item, (*path, i), lines, file, budget, depth + 1, copying) for i, item in enumerate(node.value)]


_SCALAR_LOADER = yaml.SafeLoader("")


def parse_yaml(text: str, file: str) -> Doc:
    """Parse YAML text into a `Doc`; any problem becomes an `InputError` naming the file and line."""
    from .paths import reading

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # An unclosed bracket or quote is only noticed at the end of the file; the opening line helps more.
        if exc.context_mark is not None and "<stream end>" in (exc.problem or ""):
            mark = exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and "<stream end>" in problem:
            problem = f"{exc.context} that is never closed"
        raise InputError(file, f"invalid YAML: {problem}", line=line, hint="fix the syntax at that line") from None
    except yaml.reader.ReaderError as exc:  # a NUL or other control character: binary data, not YAML
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(file, f"invalid YAML: control character #x{exc.character:04x} is not allowed",
                         line=line, hint="the file looks binary or corrupted; restore it from git") from None
    except RecursionError:
        raise InputError(file, f"values are nested more than {MAX_DEPTH} levels deep",
                         line=_deep_line(text), hint="flatten the structure") from None
    except yaml.YAMLError as exc:
        raise InputError(file, f"invalid YAML: {str(exc).splitlines()[0]}") from None
    lines: dict[KeyPath, int] = {}
    with reading(file):
        data = None if node is None else _convert(node, (), lines, file)
    return Doc(file, data, lines)


def _deep_line(text: str) -> int | None:
    """The line where nesting first passes MAX_DEPTH, found with the (non-recursive) event parser."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None


def load_yaml(path: Path, display: str | None = None, root: Path | None = None, *,
              max_bytes: int | None = None) -> Doc:
    """Read and parse a YAML file; `display` is the name errors use (relative to the workspace).

    The file must resolve inside `root` (default: its own folder), so a committed symlink cannot make
    gepa-tune read a file from elsewhere on the machine.
    """
    from .paths import MAX_TEXT_BYTES, read_text_inside

    name = display or str(path)
    text = read_text_inside(root if root is not None else path.parent, path, name, what="file",
                            missing_hint="check the path", max_bytes=max_bytes or MAX_TEXT_BYTES)
    return parse_yaml(text, name)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "a mapping", list: "a list"}


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def _matches(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if k is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if k not in (int, float) and isinstance(value, k):
            return True
    return False


@dataclass
class Section:
    """One mapping of a `Doc`, with typed getters whose errors point at the right line."""

    doc: Doc
    path: KeyPath
    data: Any

    def __post_init__(self) -> None:
        if not isinstance(self.data, dict):
            raise self.doc.error(self.path, f"expected a mapping, got {_describe(self.data)}")

    def error(self, key: str | int | None, message: str, hint: str | None = None) -> InputError:
        path = self.path if key is None else (*self.path, key)
        return self.doc.error(path, message, hint)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(None, f"missing required key '{key}'", hint=f"add '{key}:' here")
            return default
        value = self.data[key]
        if isinstance(value, str) and looks_like_secret(value):
            raise self.error(key, "this value looks like an API key or token, which never belongs in a config file "
                             "(it is not shown here)", hint=SECRET_HINT)
        if not _matches(value, kind):
            raise self.error(key, f"expected {_type_name(kind)}, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {_describe(value)}",
                             hint="write a plain number, or leave the key out for the default")
        if kind is float or (isinstance(kind, tuple) and float in kind and not isinstance(value, str)):
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        return value

    def number(self, key: str, default: float | None = None, *, minimum: float | None = None,
               maximum: float | None = None, required: bool = False, integer: bool = False) -> Any:
        value = self.get(key, int if integer else float, default, required=required)
        if value is None:
            return None
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, got {value}")
        return value

    def choice(self, key: str, choices: Iterable[str], default: str | None = None, *, required: bool = False) -> Any:
        value = self.get(key, str, default, required=required)
        options = list(choices)
        if value is not None and value not in options:
            raise self.error(key, f"unknown value '{value}'", hint=f"use one of: {', '.join(options)}")
        return value

    def child(self, key: str, *, required: bool = False) -> Section | None:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error(None, f"missing required key '{key}'", hint=f"add a '{key}:' mapping here")
            return None
        return Section(self.doc, (*self.path, key), self.data[key])

    def check_keys(self, allowed: Iterable[str]) -> None:
        """Reject unknown keys, suggesting the closest known one (a typo is the usual cause)."""
        known = list(allowed)
        for key in self.data:
            if looks_like_secret(str(key)):
                raise self.error(None, "a key here looks like an API key or token (it is not shown here)",
                                 hint=SECRET_HINT)
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
                raise self.error(key, f"unknown key '{key}'", hint=hint)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
