"""The git the Action needs, done with real `git` and without touching the user's checkout.

A commit for the pull-request branch is built with plumbing (a temporary index, `commit-tree`) on top
of the base branch's tip, then pushed by SHA. The working tree, the index and HEAD stay as they were, so
`gepa-tune action` is as safe to run by hand in a dirty clone as it is in a fresh CI checkout.

A commit counts as ours when it carries the `Gepa-Tune-Run:` trailer and the bot's author e-mail; the
Action force-pushes (with a lease on the exact tip it inspected) only over a branch made of such commits.

Credentials: the workflow checks out with `persist-credentials: false` (no token left in `.git/config`
for every later step to read), so the token is handed to the network commands that need it, and only
to them, as an `http.<server>/.extraheader` in the environment (`GIT_CONFIG_*`, never on a command
line that `ps` shows). A checkout that did persist its credentials keeps using its own header: two
Authorization headers would be refused.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import RunError

TRAILER = "Gepa-Tune-Run"
BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"


@dataclass(frozen=True)
class Identity:
    """Who the Action's commits are by; `GEPA_TUNE_GIT_NAME` / `GEPA_TUNE_GIT_EMAIL` override the bot."""

    name: str = BOT_NAME
    email: str = BOT_EMAIL

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Identity:
        return cls(environ.get("GEPA_TUNE_GIT_NAME") or BOT_NAME, environ.get("GEPA_TUNE_GIT_EMAIL") or BOT_EMAIL)


@dataclass(frozen=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    subject: str
    run_id: str | None  # the Gepa-Tune-Run trailer, when present

    def made_by(self, identity: Identity) -> bool:
        return self.run_id is not None and self.author_email == identity.email


class Git:
    """`git -C <repo>` with errors that say which command failed and what git said."""

    def __init__(self, directory: Path, remote: str = "origin") -> None:
        self.directory = Path(directory)
        self.remote = remote
        self._auth: dict[str, str] = {}
        top = self._run("rev-parse", "--show-toplevel", what="find the git repository")
        self.root = Path(top.strip())

    def use_token(self, token: str | None, server_url: str) -> None:
        """Authenticate network commands to `server_url` with `token` (see the module docstring)."""
        if not token or not server_url.startswith(("https://", "http://")):
            return
        configured = self._run("config", "--get-regexp", r"^http\..*\.extraheader$", what="read the git config",
                               check=False)
        if configured.strip():  # the checkout persisted its own credentials: adding ours would duplicate them
            return
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self._auth = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{server_url.rstrip('/')}/.extraheader",
                      "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}"}

    def _run(self, *args: str, what: str, env: Mapping[str, str] | None = None, check: bool = True,
             stdin: str | None = None, network: bool = False) -> str:
        auth = self._auth if network else {}
        full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **auth, **(env or {})}
        proc = subprocess.run(["git", "-C", str(self.directory), *args], capture_output=True, text=True,
                              env=full_env, input=stdin, check=False)
        if check and proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[:400]
            raise RunError(f"git: could not {what} (`git {args[0]}` exited {proc.returncode}): {detail}")
        return proc.stdout

    def path_in_repo(self, path: Path) -> str:
        """A workspace file's path as git names it (the workspace may sit in a subfolder)."""
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    def remote_sha(self, branch: str) -> str | None:
        """The remote branch's tip as the remote has it now (None when it does not exist)."""
        out = self._run("ls-remote", "--heads", self.remote, f"refs/heads/{branch}",
                        what=f"read branch '{branch}' on {self.remote}", network=True)
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{branch}":
                return sha
        return None

    def fetch(self, branch: str) -> str:
        """Fetch a remote branch's commits (no local ref is moved) and return its tip."""
        self._run("fetch", "--quiet", "--no-tags", self.remote, f"refs/heads/{branch}",
                  what=f"fetch '{branch}' from {self.remote}", network=True)
        return self._run("rev-parse", "FETCH_HEAD^{commit}", what="read the fetched tip").strip()

    def commits(self, base: str, tip: str) -> list[Commit]:
        """Commits on `tip` that `base` does not have, newest first."""
        fmt = f"%H%x1f%an%x1f%ae%x1f%s%x1f%(trailers:key={TRAILER},valueonly,separator=%x2c)%x1e"
        out = self._run("log", f"--format={fmt}", f"{base}..{tip}", what="list the branch's commits")
        commits = []
        for record in out.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            sha, name, email, subject, trailer = (record.split("\x1f") + [""] * 5)[:5]
            commits.append(Commit(sha, name, email, subject, trailer.strip() or None))
        return commits

    def commit_files(self, parent: str, files: Mapping[str, str], message: str, identity: Identity) -> str:
        """A new commit on `parent` whose tree is parent's with `files` (repo path -> text) replaced."""
        return self.commit_tree(self.tree_with(parent, files), parent, message, identity)

    def tree_of(self, commit: str) -> str:
        return self._run("rev-parse", f"{commit}^{{tree}}", what="read a commit's tree").strip()

    def parents(self, commit: str) -> list[str]:
        return self._run("rev-list", "--parents", "-n", "1", commit, what="read a commit's parents").split()[1:]

    def can_push(self, branch: str) -> None:
        """A `--dry-run` push of HEAD to a fresh branch name next to `branch`: the remote checks the
        credentials for pushing (GitHub answers 403 without `contents: write`) and nothing is sent."""
        probe = f"refs/heads/{branch}-gepa-tune-preflight"
        self._run("push", "--dry-run", "--quiet", "--porcelain", self.remote, f"HEAD:{probe}",
                  what=f"check that {self.remote} accepts a push (the workflow needs `permissions: contents: "
                       "write` and the token passed to the action)", network=True)

    def tree_with(self, parent: str, files: Mapping[str, str]) -> str:
        """The tree of `parent` with `files` (repo path -> text) replaced, built in a throw-away index so
        nothing the user has checked out or staged is touched."""
        with tempfile.TemporaryDirectory(prefix="gepa-tune-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._run("read-tree", parent, what="read the base tree", env=env)
            for path, text in sorted(files.items()):
                blob = self._run("hash-object", "-w", "--stdin", "--path", path, what=f"store {path}",
                                 stdin=text).strip()
                self._run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}",
                          what=f"stage {path}", env=env)
            return self._run("write-tree", what="write the tree", env=env).strip()

    def commit_tree(self, tree: str, parent: str, message: str, identity: Identity) -> str:
        people = {"GIT_AUTHOR_NAME": identity.name, "GIT_AUTHOR_EMAIL": identity.email,
                  "GIT_COMMITTER_NAME": identity.name, "GIT_COMMITTER_EMAIL": identity.email}
        return self._run("commit-tree", tree, "-p", parent, "-F", "-", what="create the commit", env=people,
                         stdin=message).strip()

    def push(self, sha: str, branch: str, *, replace: str | None) -> None:
        """Push `sha` to the branch. `replace` is the remote tip we checked (ours only): the push is
        forced, but leased on that exact tip, so a commit someone pushed meanwhile is never lost."""
        args = ["push", "--quiet", "--porcelain"]
        if replace is not None:
            args.append(f"--force-with-lease=refs/heads/{branch}:{replace}")
        self._run(*args, self.remote, f"{sha}:refs/heads/{branch}",
                  what=f"push branch '{branch}' to {self.remote} (the workflow needs `permissions: contents: write`"
                       " and the token passed to the action)", network=True)

    def show(self, sha: str, path: str) -> str | None:
        """A file's text at a commit (None when the commit does not have it)."""
        proc = subprocess.run(["git", "-C", str(self.directory), "show", f"{sha}:{path}"], capture_output=True,
                              check=False)
        return proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else None

    def current_branch(self) -> str | None:
        """The checked-out branch (None on a detached HEAD)."""
        return self._run("symbolic-ref", "--short", "-q", "HEAD", what="read HEAD", check=False).strip() or None

    def head(self) -> str:
        """The commit checked out."""
        return self._run("rev-parse", "--verify", "HEAD^{commit}", what="read HEAD").strip()

    def is_ancestor(self, commit: str, tip: str) -> bool | None:
        """Whether `commit` is `tip` or an ancestor of it; None when this clone does not have `commit`
        (a shallow checkout), so the caller can say what to fetch."""
        if not all(c in "0123456789abcdef" for c in commit) or len(commit) not in (40, 64):
            return None  # not a full object name: never handed to git as an option or a revision range
        proc = subprocess.run(["git", "-C", str(self.directory), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            return None
        proc = subprocess.run(["git", "-C", str(self.directory), "merge-base", "--is-ancestor", commit, tip],
                              capture_output=True, check=False)
        return proc.returncode == 0

    def changed(self, old: str, new: str, paths: list[str]) -> bool:
        """Whether any of `paths` differs between two commits."""
        if not paths:
            return False
        proc = subprocess.run(["git", "-C", str(self.directory), "diff", "--quiet", old, new, "--", *paths],
                              capture_output=True, check=False)
        if proc.returncode not in (0, 1):
            raise RunError(f"git: could not compare {old[:12]} with {new[:12]}: "
                           f"{' '.join(proc.stderr.decode(errors='replace').split())[:300]}")
        return proc.returncode == 1
