"""The run report as typed data: what report.json holds, and the one place it is read and written.

Why a model and not the dict: the engine writes the report once and several readers (report.md, the PR
body, the job summary, the Action's verdict and commit, gepa.lock, the terminal) used to look keys up by
string, each guessing at what might be missing. Here every part has a type, the per-instance rows are
kept per split (`task.instances.test`, `task.instances.val`), and a report.json that did not come from a
compatible gepa-tune is refused on load with one line naming the file, the key, what is wrong and what to
do, instead of a KeyError deep in a renderer.

The JSON shape stays the one documented in the README (`instances` is still one list, test rows first);
`schema_version` says which shape a file has. Files written before it existed carry only `"schema": 1`,
which is the same shape, so they read as version 1. Values are kept exactly as written (an integer score
stays an integer), so reading a file and writing it again gives the same JSON.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from ..cost_model import PromptCost, TaskEstimate
from ..errors import InputError
from ..stats import BootstrapCI

SCHEMA = 1  # the shape marker every report.json has carried since the first version
SCHEMA_VERSION = 2  # raise when the shape changes; readers refuse versions above theirs
#: Version 2 added `estimate`, `prompt_cost` and `guidance` (reviewer guidance) to each task. A field
#: marked `since` may be missing from a file (written before it existed) and reads as its default; left
#: at None it is not written, so a file without those parts stays as an older one was.
SINCE = "since"
UPGRADE_HINT = "re-render it with this gepa-tune (`gepa-tune report RUN_ID`) or use the gepa-tune that wrote it"


class ReportFormatError(Exception):
    """A value of report.json that does not fit the model; `key` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# -- the model, in report.json's key order -------------------------------------------------------------


@dataclass(frozen=True)
class EvalSetRef:
    """Which eval set the scores are on: every score names its name, version and content hash."""

    name: str
    version: str
    sha256: str
    path: str | None


@dataclass(frozen=True)
class Models:
    task: str | None
    reflection: str | None
    judge: str | None


@dataclass(frozen=True)
class ValScore:
    seed: float
    best: float
    delta: float


@dataclass(frozen=True)
class TestScore:
    __test__: ClassVar[bool] = False  # a report part, not a pytest test class

    seed: float
    best: float
    delta: float
    ci95: BootstrapCI | None  # the paired bootstrap interval of the mean per-instance delta


@dataclass(frozen=True)
class Scores:
    val: ValScore | None
    test: TestScore | None


@dataclass(frozen=True)
class Counts:
    """How many test instances improved, regressed and kept their score."""

    improved: int
    regressed: int
    unchanged: int


@dataclass(frozen=True)
class Row:
    """One instance scored by the seed (`before`) and by the best candidate (`after`)."""

    id: str
    split: str
    before: float
    after: float
    delta: float
    output_before: str
    output_after: str


@dataclass(frozen=True)
class Instances:
    """The rows of each split apart, so no reader has to split one merged list again."""

    test: tuple[Row, ...] = ()
    val: tuple[Row, ...] = ()

    SPLITS: ClassVar[tuple[str, ...]] = ("test", "val")

    def rows(self, split: str) -> tuple[Row, ...]:
        return self.test if split == "test" else self.val if split == "val" else ()

    @classmethod
    def from_json_value(cls, value: Any, key: str) -> Instances:
        rows = _parse(list[Row], value, key)
        for index, row in enumerate(rows):
            if row.split not in cls.SPLITS:
                raise ReportFormatError(f"{key}[{index}].split", f"{row.split!r} is not 'test' or 'val'")
        return cls(tuple(r for r in rows if r.split == "test"), tuple(r for r in rows if r.split == "val"))

    def to_json_value(self) -> list[dict[str, Any]]:
        return [_dump(row) for row in (*self.test, *self.val)]


@dataclass(frozen=True)
class Best:
    """The winning candidate: its full templates (only the optimized modules) and the diff to the seed."""

    candidate: int
    templates: dict[str, str]
    diff: str
    changed_modules: list[str]


@dataclass(frozen=True)
class Step:
    """One candidate on the winning lineage, with the reflection model's stated reason."""

    candidate: int
    parents: list[int]
    origin: str
    module: str | None
    iteration: int
    rationale: str
    minibatch_ids: list[str]
    minibatch_before: list[float]
    minibatch_after: list[float]
    val_score: float
    metric_calls: int


@dataclass(frozen=True)
class HistoryPoint:
    metric_calls: int
    best_val: float


@dataclass(frozen=True)
class CandidateSummary:
    candidate: int
    parents: list[int]
    origin: str
    module: str | None
    val_score: float
    val_instances: int
    iteration: int


@dataclass(frozen=True)
class Merges:
    tried: int
    accepted: int


@dataclass(frozen=True)
class Proposals:
    total: int
    accepted: int
    rejected_invalid: dict[str, int]
    rejected_not_better: int
    stopped_on_val: int
    dropped: int
    skipped_perfect: int
    repeats: int
    merges: Merges


@dataclass(frozen=True)
class StoppedChildren:
    val_instances: int
    children: int


@dataclass(frozen=True)
class ValScoring:
    val_size: int
    pool_on_all_of_val: int
    winner_val_instances: int
    stopped: list[StoppedChildren]
    calls_saved: int


@dataclass(frozen=True)
class Usage:
    metric_calls: int
    budget: int | None
    test_calls: int
    reflection_calls: int
    requests: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    retries: int
    retries_by_kind: dict[str, int]
    wall_s: float
    search_wall_s: float | None


@dataclass(frozen=True)
class GuidanceViolations:
    """How many outputs break a checkable guidance rule, by the seed (`before`) and the best (`after`)."""

    val_before: int
    val_after: int
    test_before: int
    test_after: int
    val_size: int
    test_size: int


@dataclass(frozen=True)
class GuidanceEntry:
    """One reviewer guidance item the run followed, and what became of it."""

    id: str
    text: str
    author: str
    url: str
    source: str  # "comment" or "review"
    path: str | None
    line: int | None
    created_at: str
    rule: str | None  # "forbid /re/" or "require /re/i"
    new: int  # 1 when this run took it from a comment (the PR commits it to gepa.guidance.yaml)
    answer: str | None  # the reflection model's latest word on it along the winning lineage
    answered_by: int | None  # the candidate whose reflection said it
    violations: GuidanceViolations | None


@dataclass(frozen=True)
class IgnoredComment:
    """A `/gepa-tune` comment that did not become guidance, and why."""

    author: str
    url: str
    reason: str
    text: str


@dataclass(frozen=True)
class GuidanceReport:
    items: list[GuidanceEntry]
    ignored: list[IgnoredComment]
    dropped: list[str]


@dataclass(frozen=True)
class TaskReport:
    """Everything about one task's run."""

    task: str
    description: str | None
    status: str
    stop_reason: str | None
    stop_code: str | None
    eval_set: EvalSetRef
    models: Models
    modules: list[str]
    optimized: list[str]
    split_sizes: dict[str, int]
    scores: Scores
    counts: Counts
    instances: Instances
    best: Best | None
    lineage: list[Step]
    history: list[HistoryPoint]
    candidates: list[CandidateSummary]
    proposals: Proposals
    val_scoring: ValScoring
    errors: list[str]
    usage: Usage
    #: What `--estimate` said before the run spent anything (see estimate.py); None in older reports.
    estimate: TaskEstimate | None = field(default=None, metadata={SINCE: 2})
    #: Input tokens per call of the seed and the best templates, and their monthly difference.
    prompt_cost: PromptCost | None = field(default=None, metadata={SINCE: 2})
    #: Reviewer guidance and how the run answered it; not written when there is none.
    guidance: GuidanceReport | None = field(default=None, metadata={SINCE: 2})

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    def blocker(self) -> str | None:
        """Why this task's templates cannot be proposed whatever the threshold, or None when the threshold
        decides: "unfinished", "seed_best" or "no_test". One rule for the Action's verdict and for the
        sentence the PR body and job summary show, so the two can never disagree."""
        if not self.finished:
            return "unfinished"
        if self.best is None or not self.best.changed_modules:
            return "seed_best"
        if self.scores.test is None:
            return "no_test"
        return None


@dataclass(frozen=True)
class Report:
    """One run: its options and one `TaskReport` per task that produced a result."""

    run_id: str
    status: str
    started_at: str | None
    finished_at: str | None
    options: dict[str, Any]
    tasks: list[TaskReport]
    schema: int = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def task(self, name: str) -> TaskReport | None:
        return next((t for t in self.tasks if t.task == name), None)

    def to_json(self) -> dict[str, Any]:
        """The report.json object: `schema` and `schema_version` first, then the fields in their order."""
        data = _dump(self)
        head = {"schema": data.pop("schema"), "schema_version": data.pop("schema_version")}
        return {**head, **data}

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """The model of a report.json object; raises `ReportFormatError` naming the first bad key."""
        if not isinstance(data, dict):
            raise ReportFormatError("(top level)", f"expected a JSON object, got {_kind(data)}")
        version = data.get("schema_version", SCHEMA_VERSION if data.get("schema") == SCHEMA else None)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ReportFormatError("schema_version", f"missing or not an integer ({_kind(version)})")
        if version > SCHEMA_VERSION:
            raise ReportFormatError("schema_version", f"{version} is newer than this gepa-tune reads "
                                                      f"({SCHEMA_VERSION}); upgrade gepa-tune to read it")
        if version < 1:
            raise ReportFormatError("schema_version", f"{version} is not a version gepa-tune ever wrote")
        return _parse(cls, {**data, "schema_version": version}, "")


# -- reading and writing files --------------------------------------------------------------------------


def dumps(report: Report) -> str:
    """report.json's text (one-space indent, UTF-8 kept as is, a final newline)."""
    return json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n"


def loads(text: str, file: str | Path) -> Report:
    """The report in `text` (read from `file`); anything malformed is an `InputError` (exit 2, one line)."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputError(file, f"not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})", line=line,
                         hint=UPGRADE_HINT) from None
    except ValueError as exc:  # NaN or Infinity, which a report never holds
        raise InputError(file, str(exc), hint=UPGRADE_HINT) from None
    try:
        return Report.from_json(data)
    except ReportFormatError as exc:
        hint = ("upgrade gepa-tune" if exc.key == "schema_version" and "newer" in exc.message
                else UPGRADE_HINT)
        raise InputError(file, exc.message.replace("; upgrade gepa-tune to read it", ""), key=exc.key,
                         hint=hint) from None
    except RecursionError:
        raise InputError(file, "nested too deeply to be a report", hint=UPGRADE_HINT) from None


def load(path: Path) -> Report:
    """Read and check a report.json file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text", hint=UPGRADE_HINT) from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})",
                         hint="check the run id and the file's permissions") from None
    return loads(text, path)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which no score or count can be")


# -- the one generic reader and writer ------------------------------------------------------------------


def read_part(tp: Any, value: Any, key: str) -> Any:
    """A part of the model (say a `TaskEstimate`) read from JSON data kept elsewhere, checked like report.json."""
    return _parse(tp, value, key)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _parse(tp: Any, value: Any, key: str) -> Any:
    """`value` checked against the annotation `tp` (dataclasses, lists, dicts, unions with None, scalars);
    values are returned as they are, so writing them again gives the same JSON."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        return _parse(options[0], value, key)
    if tp is Any:
        return value
    if hasattr(tp, "from_json_value"):
        return tp.from_json_value(value, key)
    if is_dataclass(tp):
        return _parse_dataclass(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ReportFormatError(key, f"expected a list, got {_kind(value)}")
        item = get_args(tp)[0]
        return [_parse(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ReportFormatError(key, f"expected an object, got {_kind(value)}")
        item = get_args(tp)[1]
        return {k: _parse(item, v, _join(key, k)) for k, v in value.items()}
    return _scalar(tp, value, key)


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ReportFormatError(key, f"{value} is not a finite number")
        expected = "a number"
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif tp is str:
        ok = isinstance(value, str)
        expected = "a string"
    else:  # pragma: no cover - an annotation this reader does not know is a bug in the model
        raise TypeError(f"report model: no reader for {tp!r} at {key}")
    if not ok:
        raise ReportFormatError(key, f"expected {expected}, got {_kind(value)}")
    return value


def _parse_dataclass(cls: type, value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        raise ReportFormatError(key or "(top level)", f"expected an object, got {_kind(value)}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in value if k not in names]
    if unknown:
        raise ReportFormatError(_join(key, str(unknown[0])), "not a key gepa-tune writes here")
    args = {}
    for f in fields(cls):
        if f.name not in value:
            if f.metadata.get(SINCE) and f.default is not MISSING:
                continue  # written by a version before the field existed
            raise ReportFormatError(_join(key, f.name), "missing")
        args[f.name] = _parse(hints[f.name], value[f.name], _join(key, f.name))
    return cls(**args)


def _dump(value: Any) -> Any:
    """The JSON value of a model object: dataclasses become objects in field order."""
    if hasattr(value, "to_json_value"):
        return value.to_json_value()
    if is_dataclass(value):  # a `since` field left at None is not written (files stay as older ones were)
        return {f.name: _dump(getattr(value, f.name)) for f in fields(value)
                if not (f.metadata.get(SINCE) and getattr(value, f.name) is None)}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value

