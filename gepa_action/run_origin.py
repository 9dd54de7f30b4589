"""Where a run started from: the git commit of the checkout and the exact gepa.yaml it read.

Recorded in run.json when a run starts, because a run folder can travel: in a matrix workflow each job
tunes one task and uploads its folder, and a final job combines the folders into one pull request
(`gepa-tune action --from-runs`). That job must be able to tell a run of this repository's current
prompts from one of an older commit, another branch or another config, without trusting anything
else the folder says. The commit is read with `git rev-parse`, never guessed: outside a git work tree
it is recorded as null, and such a run cannot be combined.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 10


def head_commit(directory: Path) -> str | None:
    """The commit checked out in `directory` (None outside a git work tree or without git)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", "-C", str(directory), "rev-parse", "--verify", "-q", "HEAD^{commit}"],
                              capture_output=True, text=True, env=env, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and len(sha) in (40, 64) else None


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes (None when it cannot be read)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def origin_meta(root: Path, config_file: Path) -> dict[str, Any]:
    """The run.json fields that say where a run started: `base_commit` and `config_sha256`."""
    return {"base_commit": head_commit(root), "config_sha256": file_sha256(config_file)}
