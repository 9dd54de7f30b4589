"""The bounded Jinja sandbox: Jinja's immutable sandbox plus limits on what one render may build.

Templates come from the user's repository and from a reflection model, so a template is hostile input:
`{{ 'A'*400000000 }}` would allocate 400 MB before any later check could look at it. The limits here
are enforced *before* each operation builds its result: repeats and concatenations by their sizes,
size arguments (`center`, widths in formats) by their value. The time limit of a whole render lives
in `watchdog.py`; rendering itself in `templates.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Bounds of one render, the same for repository templates and reflection proposals. A prompt past
#: a million characters exceeds every model's context; a render past two seconds is a loop, not a prompt.
MAX_OUTPUT_CHARS = 1_000_000
MAX_RENDER_SECONDS = 2.0
#: The largest number a template may pass to a filter or method, and the largest string or list it may
#: build with `*`, `+` or `~` (a width of a billion, or `'A' * 400000000`, allocates before any check).
MAX_SIZE = MAX_OUTPUT_CHARS
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


