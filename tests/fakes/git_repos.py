"""Real git repositories for tests: a bare `origin` and a clone of it, like a CI checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull, "GIT_TERMINAL_PROMPT": "0"}


def git(cwd: Path, *args: str, author: str = "Jane Dev <jane@example.com>") -> str:
    """Run git as a person (`author`), with no global config leaking in from the machine."""
    name, _, email = author.partition(" <")
    env = {**os.environ, **ENV, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email.rstrip(">"),
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email.rstrip(">")}
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def make_origin(tmp: Path, files: dict[str, str] | None = None, source: Path | None = None) -> tuple[Path, Path]:
    """A bare repository with one commit on `main` (the given files, or every file under `source`),
    and a clone of it to work in. Returns (bare, clone)."""
    bare, clone = tmp / "origin.git", tmp / "work"
    git(tmp, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    git(tmp, "clone", "--quiet", str(bare), str(clone))
    git(clone, "checkout", "--quiet", "-B", "main")
    if source is not None:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                target = clone / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    for name, text in (files or {}).items():
        path = clone / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (clone / ".gitignore").write_text(".gepa/\n", encoding="utf-8")
    git(clone, "add", "-A")
    git(clone, "commit", "--quiet", "-m", "initial")
    git(clone, "push", "--quiet", "origin", "main")
    return bare, clone


def commit_on(bare: Path, tmp: Path, branch: str, files: dict[str, str], message: str,
              author: str = "Jane Dev <jane@example.com>") -> str:
    """Someone else pushes a commit to `branch` of the bare repo (from their own clone)."""
    other = tmp / f"other-{abs(hash((branch, message))) % 10**8}"
    if not other.exists():
        git(tmp, "clone", "--quiet", str(bare), str(other))
    git(other, "fetch", "--quiet", "origin")
    git(other, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
    for name, text in files.items():
        path = other / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(other, "add", "-A")
    git(other, "commit", "--quiet", "-m", message, author=author)
    git(other, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", author=author)
    return git(other, "rev-parse", "HEAD")
