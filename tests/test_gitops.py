"""The Action's git, against real repositories: commits are built without touching the checkout, only
commits gepa-tune made count as its own, and a forced push never drops a commit pushed meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.git_repos import ENV, commit_on, git, make_origin

from gepa_action.errors import RunError
from gepa_action.gitops import TRAILER, Git, Identity


@pytest.fixture(autouse=True)
def _no_global_git_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def test_commit_files_leaves_the_checkout_alone_and_pushes_by_sha(tmp_path: Path) -> None:
    bare, clone = make_origin(tmp_path, {"prompts/a.j2": "old\n", "README": "hi\n"})
    (clone / "README").write_text("local edit, not staged\n")
    head = git(clone, "rev-parse", "HEAD")
    repo = Git(clone)
    base = repo.fetch("main")
    sha = repo.commit_files(base, {"prompts/a.j2": "new\n"}, f"tune\n\n{TRAILER}: run-1\n", Identity())
    repo.push(sha, "gepa-tune/a", replace=None)

    assert git(clone, "rev-parse", "HEAD") == head
    assert (clone / "README").read_text() == "local edit, not staged\n"
    assert (clone / "prompts/a.j2").read_text() == "old\n"
    assert git(bare, "show", "gepa-tune/a:prompts/a.j2") == "new"
    assert git(bare, "show", "gepa-tune/a:README") == "hi", "files the commit does not name come from the base"
    [commit] = repo.commits(base, repo.remote_sha("gepa-tune/a") or "")
    assert commit.run_id == "run-1" and commit.made_by(Identity())
    assert commit.author_email == Identity().email


def test_a_human_commit_is_not_ours(tmp_path: Path) -> None:
    bare, clone = make_origin(tmp_path, {"p.j2": "x\n"})
    repo = Git(clone)
    base = repo.fetch("main")
    repo.push(repo.commit_files(base, {"p.j2": "y\n"}, f"tune\n\n{TRAILER}: r\n", Identity()), "b", replace=None)
    commit_on(bare, tmp_path, "b", {"p.j2": "z\n"}, f"my tweak\n\n{TRAILER}: copied")
    tip = repo.fetch("b")
    commits = repo.commits(base, tip)
    assert [c.made_by(Identity()) for c in commits] == [False, True]
    assert commits[0].author_name == "Jane Dev"


def test_the_lease_protects_a_commit_pushed_after_the_check(tmp_path: Path) -> None:
    bare, clone = make_origin(tmp_path, {"p.j2": "x\n"})
    repo = Git(clone)
    base = repo.fetch("main")
    first = repo.commit_files(base, {"p.j2": "y\n"}, f"t\n\n{TRAILER}: r\n", Identity())
    repo.push(first, "b", replace=None)
    checked = repo.remote_sha("b")
    human = commit_on(bare, tmp_path, "b", {"p.j2": "z\n"}, "human")
    second = repo.commit_files(base, {"p.j2": "w\n"}, f"t\n\n{TRAILER}: r2\n", Identity())
    with pytest.raises(RunError, match="push branch 'b'"):
        repo.push(second, "b", replace=checked)
    assert repo.remote_sha("b") == human


def test_show_a_file_at_a_commit_and_a_missing_branch(tmp_path: Path) -> None:
    bare, clone = make_origin(tmp_path, {"p.j2": "x\n", "q.j2": "q\n"})
    repo = Git(clone)
    old = repo.fetch("main")
    new = commit_on(bare, tmp_path, "main", {"q.j2": "changed\n"}, "edit q")
    assert repo.fetch("main") == new
    assert repo.show(old, "q.j2") == "q\n"
    assert repo.show(new, "q.j2") == "changed\n" and repo.show(new, "nope.j2") is None
    assert repo.remote_sha("no-such-branch") is None
    assert repo.current_branch() == "main"


def test_a_workspace_in_a_subfolder_maps_to_repo_paths(tmp_path: Path) -> None:
    _, clone = make_origin(tmp_path, {"sub/gepa.yaml": "x\n"})
    assert Git(clone / "sub").path_in_repo(clone / "sub" / "prompts" / "a.j2") == "sub/prompts/a.j2"


def _recording_server() -> tuple[Any, list[str | None]]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("persisted", [False, True], ids=["token-passed", "checkout-credentials-kept"])
def test_the_token_reaches_git_only_as_a_header_for_the_server(tmp_path: Path, persisted: bool) -> None:
    """With `persist-credentials: false` the action's token goes to git's requests to the GitHub server
    (as actions/checkout would send it); a checkout that kept its own header is not given a second one."""
    import base64

    server, seen = _recording_server()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _, clone = make_origin(tmp_path, {"a": "1\n"})
        git(clone, "remote", "set-url", "origin", f"{url}/octo/prompts.git")
        if persisted:
            git(clone, "config", f"http.{url}/.extraheader", "AUTHORIZATION: basic from-checkout")
        repo = Git(clone)
        repo.use_token("ghs_secret_token_42", url)
        with pytest.raises(RunError) as failed:
            repo.remote_sha("main")
    finally:
        server.shutdown()
    expected = "basic from-checkout" if persisted else \
        "basic " + base64.b64encode(b"x-access-token:ghs_secret_token_42").decode()
    assert seen and all(h == expected for h in seen), seen
    assert "ghs_secret_token_42" not in str(failed.value)
    assert "ghs_secret_token_42" not in (clone / ".git/config").read_text()
