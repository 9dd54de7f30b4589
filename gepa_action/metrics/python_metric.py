"""A team's own metric: a Python function in their repository, loaded by path."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import itertools
import numbers
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RunError
from ..evals import Instance
from ..yamlsrc import Doc, KeyPath, Section

if TYPE_CHECKING:
    from ..lm.client import LMClient
from .base import BuildContext, Metric, MetricResult, _describe, _fmt, _show

# ----------------------------------------------------------------------------------------- python


ARGUMENTS = ("output", "expected", "inputs", "instance", "notes", "id")
_ARG_HINT = "name its parameters from: " + ", ".join(ARGUMENTS) + " (any subset, in any order)"
_module_counter = itertools.count(1)


@dataclass(frozen=True, eq=False)
class PythonMetric(Metric):
    """A function in the user's repository: `path/to/file.py:function`, path relative to the workspace.

    It is called with the keyword arguments its signature names, out of `output`, `expected`,
    `inputs`, `instance`, `notes` and `id` (a `**kwargs` function gets them all); it may be async.
    It returns a score (number or bool), a `(score, feedback)` tuple, or a dict with `score` and
    `feedback`. Scores must be in [0, 1].
    """

    name = "python"
    needs_expected = False
    required = ("function",)
    options = {
        "function": "string, required: 'path/to/file.py:function' (shorthand: metric: path/to/file.py:function)",
    }

    function: Callable[..., Any] | None = None
    label: str = ""
    file: str = ""
    params: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        spec = section.get("function", str, required=True)
        return cls.load(spec, section.doc, (*section.path, "function"), ctx.root)

    @classmethod
    def load(cls, spec: str, doc: Doc, path: KeyPath, root: Path) -> PythonMetric:
        """Import the file and find the function now, so `gepa-tune check` reports a broken metric."""
        file_part, _, func_name = spec.strip().rpartition(":")
        if not file_part or not func_name.isidentifier():
            raise doc.error(path, f"'{spec}' does not name a Python function",
                            hint="write it as 'path/to/file.py:function'")
        from ..errors import InputError
        from ..paths import read_text_inside

        file = Path(file_part)
        if not file.is_absolute():
            file = Path(root) / file
        if not file.exists() and not file.is_symlink():
            raise doc.error(path, f"python metric file '{file_part}' not found",
                            hint=f"paths are relative to the workspace root ({root})")
        try:  # confined like every workspace file: code from outside the repository is not run
            source = read_text_inside(root, file, file_part, what="python metric file")
        except InputError as exc:
            raise doc.error(path, f"{file_part}: {exc.message}", hint=exc.hint) from None
        file = file.resolve()
        try:
            code = compile(source, str(file), "exec")
        except SyntaxError as exc:
            raise doc.error(path, f"{file_part}:{exc.lineno}: syntax error: {exc.msg}",
                            hint="fix the Python file") from None
        stem = re.sub(r"\W", "_", file.stem)
        module_name = f"_gepa_metric_{next(_module_counter)}_{stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, file)
        assert module_spec is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        if str(file.parent) not in sys.path:
            sys.path.append(str(file.parent))  # so the file can import its neighbours
        try:
            exec(code, module.__dict__)  # not exec_module: no __pycache__ in the user's repository
        except SystemExit as exc:
            del sys.modules[module_name]
            raise doc.error(path, f"importing {file_part} called sys.exit({exc.code!r})",
                            hint="a metric file must not exit; move that code under `if __name__ == '__main__':`"
                            ) from None
        except Exception as exc:
            del sys.modules[module_name]
            line = _raised_at(exc, str(file))
            where = f"{file_part}:{line}" if line else file_part
            raise doc.error(path, f"importing {file_part} failed: {type(exc).__name__}: {exc} (at {where})",
                            hint="fix the file so it imports cleanly") from None
        function = getattr(module, func_name, None)
        if function is None:
            defined = [n for n, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == module_name]
            close = difflib.get_close_matches(func_name, defined, n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    f"functions defined there: {', '.join(defined)}" if defined else "define it in that file")
            raise doc.error(path, f"'{file_part}' has no function '{func_name}'", hint=hint)
        if not callable(function):
            raise doc.error(path, f"'{func_name}' in '{file_part}' is not a function", hint="point at a function")
        params = _parameters(function, func_name, doc, path)
        return cls(function=function, label=f"{file_part}:{func_name}", file=str(file), params=params)

    async def evaluate(self, output: str, instance: Instance, lm: LMClient | None) -> MetricResult:
        values = {"output": output, "expected": instance.expected, "inputs": instance.inputs,
                  "instance": instance, "notes": instance.notes, "id": instance.id}
        kwargs = values if self.params is None else {k: values[k] for k in self.params}
        assert self.function is not None
        try:
            result = self.function(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except SystemExit as exc:  # would end gepa-tune itself, silently and with the metric's exit code
            line = _raised_at(exc, self.file)
            where = f" (at {self.label.rpartition(':')[0]}:{line})" if line else ""
            raise RunError(f"python metric {self.label} called sys.exit({exc.code!r}) on instance "
                           f"'{instance.id}'{where}; a metric must return a score, not exit") from None
        except Exception as exc:
            line = _raised_at(exc, self.file)
            where = f" (raised at {self.label.rpartition(':')[0]}:{line})" if line else ""
            raise RunError(f"python metric {self.label} failed on instance '{instance.id}': "
                           f"{type(exc).__name__}: {exc}{where}") from exc
        return self._coerce(result, instance)

    def _coerce(self, result: Any, instance: Instance) -> MetricResult:
        feedback: Any = None
        if isinstance(result, MetricResult):
            score, feedback = result.score, result.feedback
        elif isinstance(result, tuple) and len(result) == 2:
            score, feedback = result
        elif isinstance(result, dict) and "score" in result:
            score, feedback = result["score"], result.get("feedback")
        else:
            score = result
        problem = None
        if isinstance(score, bool):
            score = 1.0 if score else 0.0
        if not isinstance(score, numbers.Real) or isinstance(score, bool):
            problem = f"returned {_describe(result)}"
        elif not 0 <= float(score) <= 1:  # also rejects NaN
            problem = f"returned the score {score}, outside [0, 1]"
        elif feedback is not None and not isinstance(feedback, str):
            problem = f"returned feedback that is {_describe(feedback)}, not a string"
        if problem:
            raise RunError(f"python metric {self.label} {problem} for instance '{instance.id}'; return a "
                           "score from 0 to 1, a (score, feedback) tuple, or a dict with 'score' and 'feedback'")
        score = float(score)
        if not feedback:
            if score >= 1:
                feedback = f"correct (score 1 from {self.label})"
            else:
                feedback = f"score {_fmt(score)} from {self.label}, which gave no feedback"
                if instance.expected is not None:
                    feedback += f"; expected {_show(instance.expected)}"
        return MetricResult(score, feedback)


def _parameters(function: Callable[..., Any], func_name: str, doc: Doc, path: KeyPath) -> tuple[str, ...] | None:
    """The argument names to pass, or None for a `**kwargs` function (it gets them all)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise doc.error(path, f"cannot read the parameters of '{func_name}'", hint=_ARG_HINT) from None
    names: list[str] = []
    takes_all = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            takes_all = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.name in ARGUMENTS and param.kind is not param.POSITIONAL_ONLY:
            names.append(param.name)
        elif param.default is param.empty:
            raise doc.error(path, f"function '{func_name}' has a parameter '{param.name}' that gepa-tune "
                                  "cannot fill", hint=_ARG_HINT)
    return None if takes_all else tuple(names)


def _raised_at(exc: BaseException, file: str) -> int | None:
    """The line of the innermost traceback frame that lies in `file`."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(exc, SyntaxError) and exc.filename == file:
        line = exc.lineno
    return line
