"""The fake GitHub's state: recorded requests, scripted faults and hooks, repositories, and git look-ups.

Branches and commits are not simulated: a repository's branches are those of a real (bare) git repository,
read with `git`.
"""

from __future__ import annotations

import re
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RecordedRequest:
    """One request as the fake saw it. `path` has no API prefix and no query; `status` is the answer's."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    status: int = 0


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class Hook:
    method: str
    pattern: re.Pattern[str]
    callback: Callable[[], object]


@dataclass
class Repo:
    owner: str
    name: str
    git_dir: Path
    default_branch: str
    private: bool
    drafts: bool
    id: int
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    review_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # lower-cased login -> admin/maintain/write/...
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lower-cased name
    next_number: int = 1  # shared by pull requests and issues, as on GitHub
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # fakes/github_issues.py

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


# -- git -----------------------------------------------------------------------------------------------


def run_git(git_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(git_dir), *args], capture_output=True, text=True, check=False)


def branch_sha(git_dir: Path, branch: str) -> str | None:
    """The commit `branch` points at in `git_dir`, or None if there is no such branch."""
    if not branch or branch.startswith("-"):
        return None
    result = run_git(git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def is_ancestor(git_dir: Path, maybe_ancestor: str, of: str) -> bool:
    return run_git(git_dir, "merge-base", "--is-ancestor", maybe_ancestor, of).returncode == 0


def stable_id(text: str) -> int:
    return zlib.crc32(text.encode()) % 90_000_000 + 10_000_000
