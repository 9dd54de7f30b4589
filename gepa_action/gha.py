"""Talking to the GitHub Actions runner: step outputs, the job summary, annotations and secret masks.

The runner reads these from files named by environment variables (`GITHUB_OUTPUT`,
`GITHUB_STEP_SUMMARY`) and from workflow commands printed on stdout (`::error ...::`, `::add-mask::`).
Outside Actions (a run by hand) every call here is a no-op or plain output, so the flow does not care.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from .errors import InputError


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


class Runner:
    """The runner's side channels, from the environment of the step."""

    def __init__(self, environ: Mapping[str, str], stream: TextIO | None = None) -> None:
        self.active = environ.get("GITHUB_ACTIONS") == "true"
        self.output_file = environ.get("GITHUB_OUTPUT") or None
        self.summary_file = environ.get("GITHUB_STEP_SUMMARY") or None
        self.stream = stream or sys.stdout

    def mask(self, secret: str | None) -> None:
        """Ask the runner to print *** instead of the secret in every later log line."""
        if self.active and secret:
            for line in secret.splitlines() or [secret]:
                if line.strip():
                    self.stream.write(f"::add-mask::{line}\n")
            self.stream.flush()

    def set_outputs(self, values: Mapping[str, str]) -> None:
        """Step outputs; a delimiter per value, so a value with a newline cannot forge another output."""
        if not self.output_file:
            return
        with open(self.output_file, "a", encoding="utf-8") as out:
            for name, value in values.items():
                delimiter = f"gepa_tune_{uuid.uuid4().hex}"
                out.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")

    def add_summary(self, markdown: str) -> None:
        if self.summary_file:
            with open(self.summary_file, "a", encoding="utf-8") as out:
                out.write(markdown.rstrip("\n") + "\n")

    def annotate(self, error: InputError, root: Path | None = None) -> None:
        """An `::error file=...,line=...::` annotation, so a bad config shows on the file in the PR/run."""
        if not self.active:
            return
        props = []
        if error.file:
            path = error.file
            if root is not None and not Path(path).is_absolute():
                path = (root / path).as_posix()
            props.append(f"file={_escape_property(path)}")
        if error.line is not None:
            props.append(f"line={error.line}")
        props.append("title=gepa-tune")
        message = f"{error.key}: {error.message}" if error.key else error.message
        if error.hint:
            message += f"; {error.hint}"
        self.stream.write(f"::error {','.join(props)}::{_escape_data(message)}\n")
        self.stream.flush()

    def warning(self, message: str) -> None:
        if self.active:
            self.stream.write(f"::warning title=gepa-tune::{_escape_data(message)}\n")
            self.stream.flush()
