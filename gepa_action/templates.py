"""Jinja prompt templates: sandboxed rendering, the variables a template uses, syntax errors with lines.

A prompt module is one template file that renders one chat message. Templates come from the user's
repository and, during tuning, from a reflection model, so they are always rendered in Jinja's sandbox
with `StrictUndefined`: a missing variable is an error, never a silently empty string in a prompt.
"""

from __future__ import annotations

import ctypes
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InputError

#: Bounds of one render, the same for repository templates and reflection proposals. A prompt past
#: a million characters exceeds every model's context; a render past two seconds is a loop, not a prompt.
MAX_OUTPUT_CHARS = 1_000_000
MAX_RENDER_SECONDS = 2.0
#: The largest number a template may pass to a filter or method, and the largest string or list it may
#: build with `*`, `+` or `~` (a width of a billion, or `'A' * 400000000`, allocates before any check).
MAX_SIZE = MAX_OUTPUT_CHARS
MAX_TEMPLATE_BYTES = 1024 * 1024
_MAX_POWER_BITS = 100_000


class TemplateLimitError(Exception):
    """A render went past one of the sandbox's bounds (size, time, a number too large)."""


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_SIZE:
        raise TemplateLimitError(f"{what} builds a value of {len(value):,} items, over the limit of {MAX_SIZE:,}")
    return value


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
        raise TemplateLimitError(f"{what} was given the number {value:.3g}, over the limit of {MAX_SIZE:,}"
                                 if value.bit_length() < 1000 else f"{what} was given a number over the limit "
                                 f"of {MAX_SIZE:,}")


# A width or precision of seven digits or more (or one taken from the arguments, `*`) in a `%` or `{}` format.
# A nested `{}` inside a format spec takes the width from the arguments, so it is refused too.
_WIDE_FORMAT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d{7,}|\*|\d*\.(?:\d{7,}|\*))"
                          r"|\{[^{}]*:[^{}]*(?:\d{7,}|\{)")
#: Methods and filters whose numeric argument is the size of what they build (`'x'.center(10**9)`). Other
#: numbers are data (`'{:,}'.format(25000000)`, `default(10000000)`) and are not limited.
_SIZE_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "generate_lorem_ipsum"})
_SIZE_FILTERS = frozenset({"center", "indent"})


def _check_format(template: Any, what: str) -> None:
    if isinstance(template, str) and _WIDE_FORMAT.search(template):
        raise TemplateLimitError(f"{what} uses a field width over the limit of {MAX_SIZE:,}")


def _sized(length: Any) -> int:
    try:
        return len(length)
    except TypeError:
        return 0


class _BoundedCodeGenerator(CodeGenerator):
    """Routes `~` (string concatenation) through the environment, where its result size is checked."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (no attribute escapes, ranges of at most 100,000, no `append`/`update`
    on lists and dicts, so a render cannot change an instance's inputs for the next one) plus size bounds.

    `*`, `**`, `+` and `%` are intercepted so their results are bounded before they are built (Jinja
    then also stops folding them at compile time); every call and filter has its numeric arguments
    and its result checked.
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.globals = {name: self._bounded_global(name, v) for name, v in self.globals.items()}

    def _bounded_global(self, name: str, value: Any) -> Any:
        return _bounded_callable(name, value) if callable(value) else value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_SIZE:
                    raise TemplateLimitError(f"'*' would build {len(seq) * times:,} items, over the limit "
                                             f"of {MAX_SIZE:,}")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
                    and right * math.log2(abs(left)) > _MAX_POWER_BITS):
                raise TemplateLimitError("'**' would compute a number too large for a template")
        elif operator == "+":
            if _sized(left) + _sized(right) > MAX_SIZE and isinstance(left, (str, list, tuple)):
                raise TemplateLimitError(f"'+' would build a value over the limit of {MAX_SIZE:,} items")
        elif operator == "%":
            _check_format(left, "'%' formatting")  # `%*d` is refused there, so no argument is a width
        return _check_size(super().call_binop(context, operator, left, right), f"'{operator}'")

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        if sum(_sized(p) for p in parts if isinstance(p, str)) > MAX_SIZE:
            raise TemplateLimitError(f"'~' would build a string over the limit of {MAX_SIZE:,} characters")
        return _check_size("".join(map(str, parts)), "'~'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805, B902
        name = getattr(__obj, "__name__", "a call")
        what = {"safe_range": "range()", "generate_lorem_ipsum": "lipsum()"}.get(name, f"{name}()")
        if name in _SIZE_METHODS:
            for arg in (*args, *kwargs.values()):
                _check_number(arg, what)
        bound_to = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format is wrapped
        if name in ("format", "format_map"):
            _check_format(bound_to, what)
        if name == "replace" and isinstance(bound_to, str):
            _check_replace(bound_to, args)
        return _check_size(super().call(__context, __obj, *args, **kwargs), what)


def _check_replace(text: str, args: tuple[Any, ...]) -> None:
    """str.replace can multiply a string's length in one C call: estimate the result before making it."""
    if len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = text.count(args[0]) if args[0] else len(text) + 1
        if len(text) + count * (len(args[1]) - len(args[0])) > MAX_SIZE:
            raise TemplateLimitError(f"replace() would build a string over the limit of {MAX_SIZE:,} characters")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose numeric arguments and result are checked (filters bypass the sandbox's call hook)."""
    pass_arg = getattr(func, "jinja_pass_arg", None)

    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        rest = args[1:] if pass_arg is not None else args  # the context/environment is not user data
        if name in _SIZE_FILTERS:
            for arg in (*rest[1:], *kwargs.values()):
                _check_number(arg, f"the filter '{name}'")
        if name == "format" and rest:
            _check_format(rest[0], "the filter 'format'")
        if name == "replace" and rest and isinstance(rest[0], str):
            _check_replace(rest[0], tuple(str(a) for a in rest[1:3]))
        return _check_size(func(*args, **kwargs), f"the filter '{name}'")

    return bounded


def _bounded_callable(name: str, func: Any) -> Any:
    if isinstance(func, type):  # cycler, joiner, namespace: classes, kept as they are
        return func

    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        return _check_size(func(*args, **kwargs), f"{name}()")

    return bounded


_ENV = BoundedSandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


class _Watchdog:
    """Stops renders that run past their deadline by raising `TemplateLimitError` in their thread.

    A render is synchronous Python (Jinja compiles templates to Python code), so nothing cooperative
    can stop four nested loops over long strings; the interpreter's asynchronous exception can, between
    two bytecodes, at no cost to renders that finish in time. One daemon thread serves every render.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._deadlines: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
        self._fired: set[int] = set()
        self._tokens = 0
        self._thread: threading.Thread | None = None
        self._next_wake = math.inf

    def start(self, seconds: float) -> int:
        with self._lock:
            self._tokens += 1
            token = self._tokens
            deadline = time.monotonic() + seconds
            self._deadlines[token] = (deadline, threading.get_ident())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="gepa-render-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._next_wake:  # only wake the thread when it would otherwise sleep past this one
                self._next_wake = deadline
                self._wake.notify()
            return token

    def stop(self, token: int) -> bool:
        """End a render's watch; True when the deadline fired (any pending exception is withdrawn)."""
        with self._lock:
            self._deadlines.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
            if fired:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
            return fired

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for token, (deadline, thread_id) in list(self._deadlines.items()):
                    if deadline <= now and token not in self._fired:
                        self._fired.add(token)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                                   ctypes.py_object(_RenderTimeout))
                pending = [d for t, (d, _) in self._deadlines.items() if t not in self._fired]
                self._next_wake = min(pending) if pending else math.inf
                self._wake.wait(max(0.0, self._next_wake - now) + 0.005 if pending else None)


class _RenderTimeout(BaseException):  # noqa: N818 - a BaseException so no `except Exception` in Jinja eats it
    """Raised asynchronously into a render that passed its deadline."""


_WATCHDOG = _Watchdog()


#: How to fix each kind of render failure: one message per cause, not one hint for all of them.
RENDER_HINTS = {
    "missing": "add the variable under inputs, or change the template",
    "attribute": "check the inputs' objects have that key, or change the template",
    "sandbox": "templates may not reach Python internals (dunder names like __class__, private attributes, "
               "modules) nor change their inputs (append, update, pop, ...); remove that expression",
    "include": "a prompt template is a single file: {% include %}, {% extends %} and {% import %} are not "
               "supported; paste the text into the template",
    "limit": f"keep loops and repeats small: a prompt renders within {MAX_RENDER_SECONDS:g} s to at most "
             f"{MAX_OUTPUT_CHARS:,} characters",
    "error": "fix the expression at fault (a filter given the wrong type, a division by zero, ...)",
}


class TemplateRenderError(Exception):
    """Rendering failed for one set of variables; the caller knows which instance that was.

    `kind` says why (a key of `RENDER_HINTS`), so every caller can give the fix that matches.
    """

    def __init__(self, message: str, variable: str | None = None, kind: str = "error") -> None:
        super().__init__(message)
        self.variable = variable
        self.kind = kind

    @property
    def hint(self) -> str:
        return RENDER_HINTS.get(self.kind, RENDER_HINTS["error"])


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt module: where it lives (`module` is its path relative to the workspace) and its text."""

    module: str
    source: str
    variables: frozenset[str]


def syntax_problem(source: str) -> tuple[str, int | None] | None:
    """Return (message, line) when `source` is not a usable prompt template, else None.

    Besides Jinja syntax this refuses, without rendering, what can never render in the sandbox:
    `{% include %}`/`{% extends %}`/`{% import %}` (a prompt is one file, there is no loader) and
    dunder and name-mangled attributes (the way out of a sandbox, e.g. `__mro__`); other `_` names are
    left to the sandbox at render time, since `doc._id` may be a key of an input.
    """
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or "syntax error", exc.lineno
    except RecursionError:
        return "the template is nested too deeply", None
    for node in tree.find_all((jinja2.nodes.Include, jinja2.nodes.Extends, jinja2.nodes.Import,
                               jinja2.nodes.FromImport)):
        tag = {"Include": "include", "Extends": "extends"}.get(type(node).__name__, "import")
        return f"{{% {tag} %}} is not supported", node.lineno
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        attr = node.attr if isinstance(node, jinja2.nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, jinja2.nodes.Const) else None)
        # Dunder and name-mangled attributes are how sandbox escapes start; a plain `_id` may be a dict key.
        if isinstance(attr, str) and "__" in attr and (isinstance(node, jinja2.nodes.Getattr) or attr.endswith("__")):
            return f"the attribute '{attr}' is blocked by the template sandbox (Python internals)", node.lineno
    return None


def template_variables(source: str) -> frozenset[str]:
    """The top-level variables a template reads (assumes the source parses)."""
    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def parse_template(source: str, module: str) -> PromptTemplate:
    """Check syntax and collect variables; a syntax error names the file and line."""
    problem = syntax_problem(source)
    if problem is not None:
        message, line = problem
        if "not supported" in message:
            hint = RENDER_HINTS["include"]
        elif "sandbox" in message:
            hint = RENDER_HINTS["sandbox"]
        else:
            message = f"template syntax error: {message}"
            hint = "fix the Jinja syntax ({{ var }}, {% if %}...{% endif %})"
        raise InputError(module, message.rstrip("."), line=line, hint=hint)
    return PromptTemplate(module, source, template_variables(source))


def load_template(path: Path, module: str, root: Path | None = None) -> PromptTemplate:
    """Read a template file from the workspace; it must resolve inside `root` (default: its folder)."""
    from .paths import read_text_inside, reading

    source = read_text_inside(root if root is not None else path.parent, path, module, what="template file",
                              max_bytes=MAX_TEMPLATE_BYTES, missing_hint="create it or fix the path in gepa.yaml")
    if not source.strip():
        raise InputError(module, "template is empty", hint="write the prompt text into it")
    with reading(module, "template file"):
        return parse_template(source, module)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    # Tuning renders the same few candidate texts thousands of times; compile each once.
    return _ENV.from_string(source)


def render(source: str, variables: dict[str, Any], *, seconds: float = MAX_RENDER_SECONDS) -> str:
    """Render in the bounded sandbox; any failure raises TemplateRenderError with its `kind`.

    The output is collected piece by piece so a template that loops out megabytes stops at the
    size limit, and a watchdog stops one that runs past `seconds` (see `_Watchdog`).
    """
    token = None
    try:
        template = _compiled(source)
        token = _WATCHDOG.start(seconds)
        try:
            text = _collect(template, variables)
        finally:
            if _WATCHDOG.stop(token):
                raise _RenderTimeout
        return text.strip()
    except _RenderTimeout:
        if token is not None:
            _WATCHDOG.stop(token)
        raise TemplateRenderError(f"rendering took longer than {seconds:g} s", kind="limit") from None
    except jinja2.UndefinedError as exc:
        missing = _missing_name(str(exc))
        kind = "missing" if "is undefined" in str(exc) else "attribute"
        raise TemplateRenderError(str(exc), missing, kind=kind) from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateRenderError(f"blocked by the template sandbox: {exc}", kind="sandbox") from None
    except (jinja2.TemplateNotFound, jinja2.TemplatesNotFound) as exc:
        raise TemplateRenderError(f"cannot include other templates ({exc})", kind="include") from None
    except TemplateLimitError as exc:
        raise TemplateRenderError(str(exc), kind="limit") from None
    except OverflowError as exc:  # Jinja's own range() cap, or float arithmetic past its range
        problem = "range() of more than 100,000 items" if "MAX_RANGE" in str(exc) else f"a number is too large: {exc}"
        raise TemplateRenderError(problem, kind="limit") from None
    except (MemoryError, RecursionError) as exc:
        what = "memory" if isinstance(exc, MemoryError) else "nesting depth (recursion)"
        raise TemplateRenderError(f"rendering ran out of {what}", kind="limit") from None
    except jinja2.TemplateError as exc:
        kind = "include" if "no loader" in str(exc) else "error"
        raise TemplateRenderError(str(exc) or type(exc).__name__, kind=kind) from None
    except Exception as exc:  # a filter applied to the wrong type, a division by zero, ...
        raise TemplateRenderError(f"{type(exc).__name__}: {exc}", kind="error") from None


def _collect(template: jinja2.Template, variables: dict[str, Any]) -> str:
    context = template.new_context(dict(variables))
    parts: list[str] = []
    size = 0
    for chunk in template.root_render_func(context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"the rendered prompt passes {MAX_OUTPUT_CHARS:,} characters")
        parts.append(chunk)
    return "".join(parts)


def _missing_name(message: str) -> str | None:
    # Jinja words it "'subject' is undefined" or "'dict object' has no attribute 'x'".
    if message.startswith("'") and "' is undefined" in message:
        return message[1:message.index("' is undefined")]
    if "has no attribute '" in message:
        return message.split("has no attribute '", 1)[1].rstrip("'")
    return None
