"""The two kinds of failure a user sees, kept apart so the CLI can map them to exit codes.

`InputError` is the user's to fix (a file, a line or key, what is wrong, how to fix it): exit 2.
`RunError` is a failure while running (an endpoint that keeps failing, a metric that crashes): exit 1.
Both render as one line; neither ever carries a secret.
"""

from __future__ import annotations

import re
from pathlib import Path

# Shapes of API keys and tokens: well-known prefixes, and long random-looking runs of key characters.
_KEY_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9])(?:sk|rk)-(?=[A-Za-z0-9_\-]{16,})[A-Za-z0-9_\-]*\d[A-Za-z0-9_\-]*|sk_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9\-]{10,}|\bA[KS]IA[0-9A-Z]{16}\b"
    r"|AIza[0-9A-Za-z_\-]{30,}|\bhf_[A-Za-z0-9]{20,}|glpat-[A-Za-z0-9_\-]{20,}|\bgsk_[A-Za-z0-9]{20,}")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_+=]{32,}")
REDACTED = "[value hidden: it looks like a secret]"


def _random_looking(token: str) -> bool:
    """Mixed case, digits and many distinct characters: a key, not a word, a path or a hex digest."""
    return (any(c.islower() for c in token) and any(c.isupper() for c in token)
            and sum(c.isdigit() for c in token) >= 3 and len(set(token)) >= 16)


def looks_like_secret(text: str) -> bool:
    """Whether `text` contains something shaped like an API key or token (never echo such a value)."""
    if _KEY_PREFIXED.search(text):
        return True
    return any(_random_looking(m.group(0)) for m in _LONG_TOKEN.finditer(text))


def redact_secrets(text: str) -> str:
    """`text` with every key-shaped run replaced: the last guard before a message is printed."""
    text = _KEY_PREFIXED.sub(REDACTED, text)
    return _LONG_TOKEN.sub(lambda m: REDACTED if _random_looking(m.group(0)) else m.group(0), text)


class GepaError(Exception):
    """Base of the errors the CLI prints as one line instead of a traceback."""

    exit_code = 1


class InputError(GepaError):
    """A malformed config, template or eval file.

    The message reads `FILE:LINE: KEY: what is wrong; how to fix it`, so an editor or a GitHub
    annotation can jump to the spot.
    """

    exit_code = 2

    def __init__(
        self,
        file: str | Path | None,
        message: str,
        *,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        self.message = message
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: "
        if self.key:
            text += f"{self.key}: "
        text += self.message
        if self.hint:
            text += f"; {self.hint}"
        return redact_secrets(" ".join(text.split("\n")))


class RunError(GepaError):
    """A run that could not finish: the endpoint kept failing, a metric crashed, and so on."""

    exit_code = 1
