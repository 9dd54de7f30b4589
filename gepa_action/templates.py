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
from jinja2.sandbox import SandboxedEnvironment

from .errors import InputError

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


class TemplateRenderError(Exception):
    """Rendering failed for one set of variables; the caller knows which instance that was."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt module: where it lives (`module` is its path relative to the workspace) and its text."""

    module: str
    source: str
    variables: frozenset[str]


def syntax_problem(source: str) -> tuple[str, int | None] | None:
    """Return (message, line) when `source` is not valid Jinja, else None."""
    try:
        _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or "syntax error", exc.lineno
    return None


def template_variables(source: str) -> frozenset[str]:
    """The top-level variables a template reads (assumes the source parses)."""
    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def parse_template(source: str, module: str) -> PromptTemplate:
    """Check syntax and collect variables; a syntax error names the file and line."""
    problem = syntax_problem(source)
    if problem is not None:
        message, line = problem
        raise InputError(module, f"template syntax error: {message}", line=line,
                         hint="fix the Jinja syntax ({{ var }}, {% if %}...{% endif %})")
    return PromptTemplate(module, source, template_variables(source))


def load_template(path: Path, module: str) -> PromptTemplate:
    """Read a template file from the workspace."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(module, "template file not found", hint="create it or fix the path in gepa.yaml") from None
    except OSError as exc:  # a folder where a file should be, no permission, ...
        raise InputError(module, f"cannot read: {exc.strerror or exc}", hint="check the path and permissions") from None
    except UnicodeDecodeError:
        raise InputError(module, "template is not UTF-8 text", hint="save it as UTF-8") from None
    if not source.strip():
        raise InputError(module, "template is empty", hint="write the prompt text into it")
    return parse_template(source, module)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    # Tuning renders the same few candidate texts thousands of times; compile each once.
    return _ENV.from_string(source)


def render(source: str, variables: dict[str, Any]) -> str:
    """Render in the sandbox; missing variables and sandbox violations raise TemplateRenderError."""
    try:
        return _compiled(source).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        missing = _missing_name(str(exc))
        raise TemplateRenderError(str(exc), missing) from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateRenderError(f"blocked by the template sandbox: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateRenderError(str(exc)) from None
    except Exception as exc:  # a filter applied to the wrong type, a division by zero, ...
        raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None


def _missing_name(message: str) -> str | None:
    # Jinja words it "'subject' is undefined" or "'dict object' has no attribute 'x'".
    if message.startswith("'") and "' is undefined" in message:
        return message[1:message.index("' is undefined")]
    if "has no attribute '" in message:
        return message.split("has no attribute '", 1)[1].rstrip("'")
    return None
