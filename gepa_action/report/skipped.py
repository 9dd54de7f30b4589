"""A run that `gepa-tune action --from-runs` could not use, and why: shown to the reviewer.

A matrix job that failed, was cut off, uploaded a damaged folder or tuned other inputs than the
repository now holds must not silently vanish from the combined pull request: its task keeps the seed
prompts, and the PR body and the job summary name the task, the run folder and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SkippedRun:
    """`task` is None when the folder is too damaged to say which task it tuned. All three strings are
    untrusted (they come from an uploaded artifact): renderers escape them."""

    task: str | None
    run: str  # the run folder as given on the command line (or found under it)
    reason: str
