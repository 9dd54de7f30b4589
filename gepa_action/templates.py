"""Jinja prompt templates: sandboxed rendering, the variables a template uses, syntax errors with lines.

A prompt module is one template file that renders one chat message. Templates come from the user's
repository and, during tuning, from a reflection model, so they are always rendered in Jinja's sandbox
with `StrictUndefined`: a missing variable is an error, never a silently empty string in a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from .errors import InputError
from .sandbox import MAX_OUTPUT_CHARS, MAX_RENDER_SECONDS, BoundedSandbox, TemplateLimitError
from .watchdog import WATCHDOG, DeadlinePassed

MAX_TEMPLATE_BYTES = 1024 * 1024

_ENV = BoundedSandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


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
        # The parser reads a long chain (`a.b.b.b...`) without recursing, but every walk of the tree
        # recurses per level: walk it here, where running out of depth is a clear answer, so that
        # `template_variables` and the checks below never raise RecursionError on a parsed template.
        meta.find_undeclared_variables(tree)
        return _unsupported(tree)
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or "syntax error", exc.lineno
    except RecursionError:
        return "the template is nested too deeply", None


def _unsupported(tree: jinja2.nodes.Template) -> tuple[str, int | None] | None:
    """The first construct of a parsed template that can never render in the sandbox (see `syntax_problem`)."""
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
        token = WATCHDOG.start(seconds)
        try:
            text = _collect(template, variables)
        finally:
            if WATCHDOG.stop(token):
                raise DeadlinePassed
        return text.strip()
    except DeadlinePassed:
        if token is not None:
            WATCHDOG.stop(token)
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
