"""Versioned eval sets: loading JSONL/YAML instances, the content hash, deterministic splits.

An eval set is named and carries a version label chosen by its owner plus a sha256 of its normalised
content, so a score can always say exactly which data it was measured on, and an edit that forgot to
bump the version still shows up as a different hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .paths import MAX_EVAL_BYTES, read_bytes_inside, reading
from .yamlsrc import Doc, load_yaml

SPLITS = ("train", "val", "test")
INSTANCE_KEYS = ("id", "inputs", "expected", "split", "notes")


@dataclass(frozen=True)
class Instance:
    """One eval case. `inputs` are the template variables; `line` is where it sits in its file."""

    id: str
    inputs: dict[str, Any]
    expected: Any = None
    split: str = "train"
    notes: str | None = None
    line: int | None = None
    fixed_split: bool = field(default=False, compare=False)
    #: The eval set file it came from, as the user wrote it (for errors that point at the instance).
    file: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EvalSet:
    """A loaded eval set. `file` is the path as the user wrote it, for error messages."""

    name: str
    version: str
    file: str
    instances: tuple[Instance, ...]
    sha256: str

    def ref(self) -> dict[str, str]:
        """The identity every written score carries."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def by_split(self, split: str) -> list[Instance]:
        if split == "all":
            return list(self.instances)
        return [i for i in self.instances if i.split == split]

    def error_at(self, instance: Instance, message: str, hint: str | None = None) -> InputError:
        return InputError(self.file, f"instance '{instance.id}': {message}", line=instance.line, hint=hint)


def _kind(value: Any) -> str:
    return {bool: "true/false", float: "a number with a fraction", dict: "an object", list: "a list"}.get(
        type(value), type(value).__name__)


def _instance_from(data: Any, file: str, line: int | None, where: str) -> Instance:
    if not isinstance(data, dict):
        raise InputError(file, f"{where} must be an object with 'id' and 'inputs'", line=line)
    unknown = [k for k in data if k not in INSTANCE_KEYS]
    if unknown:
        raise InputError(file, f"unknown field '{unknown[0]}'", line=line,
                         hint=f"allowed fields: {', '.join(INSTANCE_KEYS)} (put extra data under 'inputs')")
    raw_id = data.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        raise InputError(file, f"'id' must be a string or an integer, got {_kind(raw_id)}", line=line,
                         hint="give every instance a unique string id")
    if raw_id is None or str(raw_id).strip() == "":
        raise InputError(file, "missing or empty 'id'", line=line, hint="give every instance a unique string id")
    inputs = data.get("inputs", {})
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise InputError(file, f"instance '{raw_id}': 'inputs' must be an object of template variables", line=line)
    split = data.get("split")
    if split is not None and split not in SPLITS:
        raise InputError(file, f"instance '{raw_id}': unknown split '{split}'", line=line,
                         hint="use train, val or test, or leave it out for a hash-based split")
    notes = data.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise InputError(file, f"instance '{raw_id}': 'notes' must be text", line=line)
    return Instance(
        id=str(raw_id),
        inputs={str(k): v for k, v in inputs.items()},
        expected=data.get("expected"),
        split=split or "train",
        notes=notes,
        line=line,
        fixed_split=split is not None,
        file=file,
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: json.loads would silently keep the last of two."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key '{key}' in one object")
        out[key] = value
    return out


def _non_finite(value: Any, depth: int = 0) -> bool:
    """Whether a NaN or an infinity hides anywhere in `value` (it breaks scores, hashes and JSON reports)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth > 200:
        return False
    if isinstance(value, dict):
        return any(_non_finite(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v, depth + 1) for v in value)
    return False


def _lone_surrogate(value: Any, depth: int = 0) -> bool:
    """Whether a text in `value` (a key or a string) holds half of a UTF-16 pair, such as JSON's "\\ud800"
    alone: valid JSON, but no character, so the file's hash, the prompt and the report cannot encode it."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if depth > 200:
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k, depth + 1) or _lone_surrogate(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v, depth + 1) for v in value)
    return False


def _check_values(instance: Instance, file: str, line: int | None) -> None:
    """Refuse what the JSON or YAML parser accepts but nothing after it can handle, naming the line."""
    values = (instance.inputs, instance.expected, instance.notes, instance.id)
    if any(_non_finite(v) for v in values):
        raise InputError(file, f"instance '{instance.id}': a number is NaN or infinite (or too large for a float)",
                         line=line,
                         hint="write a plain finite number, or quote it as text")
    if any(_lone_surrogate(v) for v in values):
        raise InputError(file, f"instance {instance.id!r}: a text holds a lone surrogate (an escape such as "
                               "\\ud800 without its pair), which is no character", line=line,
                         hint="write the character itself, or both halves of a pair, such as \\ud83d\\ude00")


def _read_jsonl(root: Path, path: Path, file: str) -> list[Instance]:
    raw = read_bytes_inside(root, path, file, what="eval set file", max_bytes=MAX_EVAL_BYTES,
                            missing_hint="create it or fix 'eval.path' in gepa.yaml")
    out = []
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark some editors write
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(file, "line is not UTF-8 text", line=number, hint="save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            data = json.loads(line, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise InputError(file, f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}", line=number,
                             hint="each line must be one complete JSON object") from None
        except RecursionError:
            raise InputError(file, "invalid JSON: values are nested too deeply", line=number,
                             hint="flatten the object") from None
        except ValueError as exc:  # NaN/Infinity, or an integer with thousands of digits
            problem = str(exc).splitlines()[0] if "digits" not in str(exc) else "a number has thousands of digits"
            raise InputError(file, f"invalid JSON: {problem}", line=number,
                             hint="write plain finite numbers (or quote the value as text)") from None
        instance = _instance_from(data, file, number, "each line")
        _check_values(instance, file, number)
        out.append(instance)
    return out


def _read_yaml(root: Path, path: Path, file: str) -> list[Instance]:
    doc: Doc = load_yaml(path, file, root=root, max_bytes=MAX_EVAL_BYTES // 8)
    items = doc.data
    prefix: tuple[str | int, ...] = ()
    if isinstance(items, dict):
        extra = [k for k in items if k not in ("instances", "description")]
        if extra or "instances" not in items:
            raise doc.error((extra[0],) if extra else (), "an eval set mapping holds 'instances' (a list)",
                            hint="write the instances as a top-level list or under 'instances:'")
        items, prefix = items["instances"], ("instances",)
    if items is None:
        items = []
    if not isinstance(items, list):
        raise doc.error(prefix, "expected a list of instances")
    out = []
    for i, item in enumerate(items):
        instance = _instance_from(item, file, doc.line((*prefix, i)), "each instance")
        _check_values(instance, file, instance.line)
        out.append(instance)
    return out


def content_hash(instances: Iterable[Instance]) -> str:
    """sha256 of a normal form: instances sorted by id, keys sorted, so format and order do not matter."""
    normal = [
        {"id": i.id, "inputs": i.inputs, "expected": i.expected, "notes": i.notes,
         "split": i.split if i.fixed_split else None}
        for i in sorted(instances, key=lambda i: i.id)
    ]
    text = json.dumps(normal, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_of(instance_id: str, fractions: tuple[float, float, float], seed: int) -> str:
    """Deterministic split from a hash of (seed, id): appending instances never moves existing ones."""
    digest = hashlib.sha256(f"{seed}\x00{instance_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    train, val, _ = fractions
    if u < train:
        return "train"
    if u < train + val:
        return "val"
    return "test"


def load_eval_set(path: Path, file: str, *, name: str, version: str,
                  fractions: tuple[float, float, float] = (0.34, 0.33, 0.33), seed: int = 0,
                  root: Path | None = None) -> EvalSet:
    """Load, validate and split an eval set (`.jsonl`, `.yaml` or `.yml`).

    The file must resolve inside `root` (the workspace; default: the file's own folder), so neither
    `eval.path: ../x.jsonl` nor a committed symlink sends data from elsewhere to a model.
    """
    with reading(file, "eval set file"):
        return _load_eval_set(path, file, name=name, version=version, fractions=fractions, seed=seed,
                              root=root if root is not None else path.parent)


def _load_eval_set(path: Path, file: str, *, name: str, version: str, fractions: tuple[float, float, float],
                   seed: int, root: Path) -> EvalSet:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        instances = _read_jsonl(root, path, file)
    elif suffix in (".yaml", ".yml"):
        instances = _read_yaml(root, path, file)
    else:
        raise InputError(file, f"unsupported eval set format '{suffix or path.name}'",
                         hint="use a .jsonl file (one JSON object per line) or a .yaml list")
    if not instances:
        raise InputError(file, "the eval set is empty", hint="add at least one instance")
    first_seen: dict[str, Instance] = {}
    for inst in instances:
        if inst.id in first_seen:
            raise InputError(file, f"duplicate id '{inst.id}' (first at line {first_seen[inst.id].line})",
                             line=inst.line, hint="ids must be unique within an eval set")
        first_seen[inst.id] = inst
    instances = [i if i.fixed_split else replace(i, split=split_of(i.id, fractions, seed)) for i in instances]
    return EvalSet(name=name, version=version, file=file, instances=tuple(instances),
                   sha256=content_hash(instances))


def split_counts(eval_set: EvalSet) -> dict[str, int]:
    counts = Counter(i.split for i in eval_set.instances)
    return {s: counts.get(s, 0) for s in SPLITS}
