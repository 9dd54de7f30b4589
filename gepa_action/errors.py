"""The two kinds of failure a user sees, kept apart so the CLI can map them to exit codes.

`InputError` is the user's to fix (a file, a line or key, what is wrong, how to fix it): exit 2.
`RunError` is a failure while running (an endpoint that keeps failing, a metric that crashes): exit 1.
Both render as one line; neither ever carries a secret.
"""

from __future__ import annotations

from pathlib import Path


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
        return text


class RunError(GepaError):
    """A run that could not finish: the endpoint kept failing, a metric crashed, and so on."""

    exit_code = 1
