"""pre-commit hooks: files -> tasks, `hook check`, the `hook eval` regression gate, and pre-commit itself.

The gate scores against the fake OpenAI server over real HTTP. The last tests drive the real `pre-commit`
in throw-away git repositories: with the hook definitions of `.pre-commit-hooks.yaml` run as local
`language: system` hooks (a real `git commit` and `git push` through installed git hooks), and once as
the installable `language: python` hook that users get, pip-installed by pre-commit into its own
virtualenv. That environment is cached across test runs (see `hook_env_cache`): slow to build, quick after.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fakes.workspace_factory import GEPA_YAML, LABELLED_ROWS, keyword_label, make_workspace

from gepa_action.cli import main
from gepa_action.hooks import affected_tasks

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MANIFEST = REPO / ".pre-commit-hooks.yaml"
KEY = "sk-test-hooks-0123456789"
ROWS = LABELLED_ROWS
GOOD_PROMPT = "Classify the ticket."
WORSE_PROMPT = "Say something about the ticket."  # the scripted model gets every ticket wrong with it
SECOND_TASK = """\
  - name: graded
    prompt:
      user: prompts/graded.j2
    eval:
      path: evals/graded.jsonl
      version: "1"
    metric: metrics/grade.py:score
"""


def scripted_model(body: dict) -> str:
    """Answers right only when the system prompt asks to classify: a worse prompt scores lower."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    if "Classify" not in system:
        return "no idea"
    return keyword_label(body)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_workspace(root: Path) -> Path:
    return make_workspace(root, instances=ROWS, files={".gitignore": ".gepa/\n"})


@pytest.fixture
def gated(tmp_path: Path, openai_server, monkeypatch) -> Path:
    """A workspace whose baseline (val 0.5: a1 right, a2 wrong) is recorded in gepa.lock."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    openai_server.responder = scripted_model
    write_workspace(tmp_path)
    assert run("-C", str(tmp_path), "eval", "--update-baseline").exit_code == 0
    openai_server.reset()
    return tmp_path


def gate(root: Path, *args: str):
    return run("-C", str(root), "hook", "eval", *args)


# ------------------------------------------------------------------------------------- files -> tasks


@pytest.fixture
def two_tasks(tmp_path: Path) -> Path:
    return make_workspace(tmp_path, config=GEPA_YAML + SECOND_TASK, files={
        "prompts/graded.j2": "Grade: {{ text }}",
        "evals/graded.jsonl": '{"id": "g1", "inputs": {"text": "x"}}\n',
        "metrics/grade.py": "def score(output):\n    return 1.0\n",
    })


def test_files_map_to_the_tasks_they_feed(two_tasks, monkeypatch):
    config = two_tasks / "gepa.yaml"

    def affected(*files: str, cwd: Path = two_tasks) -> dict[str, list[str]]:
        return affected_tasks(config, files, cwd).tasks

    assert affected("prompts/system.j2") == {"triage": ["prompts/system.j2"]}
    assert affected("README.md", "src/app.py", "prompts/unused.j2") == {}
    assert affected("evals/graded.jsonl", "metrics/grade.py") == {"graded": ["evals/graded.jsonl",
                                                                             "metrics/grade.py"]}
    assert affected("prompts/user.j2", "prompts/graded.j2") == {"triage": ["prompts/user.j2"],
                                                                "graded": ["prompts/graded.j2"]}
    everything = affected_tasks(config, ["gepa.yaml"], two_tasks)
    assert everything.shared == ["gepa.yaml"] and list(everything.tasks) == ["triage", "graded"]
    assert affected_tasks(config, ["gepa.lock"], two_tasks).shared == ["gepa.lock"]
    # paths are taken relative to where the hook runs (pre-commit: the repository root)
    assert affected("../prompts/system.j2", cwd=two_tasks / "evals") == {"triage": ["../prompts/system.j2"]}
    assert not affected_tasks(config, [], two_tasks)


def test_a_broken_config_in_the_change_still_maps_and_check_reports_it(two_tasks):
    (two_tasks / "gepa.yaml").write_text("lm:\n  task_model: a: b\n")
    assert affected_tasks(two_tasks / "gepa.yaml", ["gepa.yaml"], two_tasks).shared == ["gepa.yaml"]
    result = run("-C", str(two_tasks), "hook", "check", "gepa.yaml")
    assert result.exit_code == 2 and "error: gepa.yaml:2: invalid YAML" in result.stderr


def test_manifest_file_patterns_let_through_what_can_matter():
    """pre-commit pre-filters by `files` (re.search); the hook maps the rest itself."""
    hooks = {h["id"]: h for h in yaml.safe_load(MANIFEST.read_text())}
    assert set(hooks) == {"gepa-check", "gepa-eval"}
    pattern = re.compile(hooks["gepa-check"]["files"])
    for name in ("gepa.yaml", "sub/gepa.lock", "prompts/a/system.j2", "p/x.jinja2", "evals/t.jsonl",
                 "evals/t.yaml", "metrics/m.py", "prompts/x.txt", "prompts/x.md"):
        assert pattern.search(name), name
    for name in ("logo.png", "src/app.js", "gepa.lock.bak", "Makefile"):
        assert not pattern.search(name), name
    assert hooks["gepa-check"]["stages"] == ["pre-commit"]
    assert hooks["gepa-eval"]["stages"] == ["pre-push", "manual"]
    assert all(h["language"] == "python" and h["require_serial"] for h in hooks.values())


# ----------------------------------------------------------------------------------------- hook check


def test_hook_check_is_silent_when_nothing_matters_and_reports_broken_templates(two_tasks):
    result = run("-C", str(two_tasks), "hook", "check", "README.md", "logo.png")
    assert result.exit_code == 0 and result.output == ""
    result = run("-C", str(two_tasks), "hook", "check", "prompts/system.j2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok  triage:") and "graded" not in result.stdout
    (two_tasks / "prompts/system.j2").write_text("Classify {{ text ")
    result = run("-C", str(two_tasks), "hook", "check", "prompts/system.j2")
    assert result.exit_code == 2
    assert "error: prompts/system.j2:1: template syntax error:" in result.stderr
    assert "Traceback" not in result.output


def test_hook_check_is_fast_and_never_loads_the_model_client():
    """The brief's measurement: `time gepa-tune hook check prompts/triage/system.j2` on this repository."""
    exe = BIN / "gepa-tune"
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([str(exe), "hook", "check", "prompts/triage/system.j2"], cwd=REPO,
                              capture_output=True, text=True, timeout=30)
        walls.append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
    assert min(walls) <= 1.0, walls
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom gepa_action.cli import main\n"
             "r = CliRunner().invoke(main, ['hook', 'check', 'prompts/triage/system.j2'])\n"
             "print(r.exit_code, sorted(m for m in ('openai', 'httpx') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\n")[0] == "0 []", (out.stdout, out.stderr)


# ----------------------------------------------------------------------------------------------- gate


def test_gate_passes_without_a_request_when_nothing_changed_since_the_baseline(gated, openai_server):
    result = gate(gated, "prompts/system.j2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("triage: unchanged since its baseline (val 0.500) PASS")
    assert openai_server.attempts == 0


def test_gate_passes_an_equally_good_prompt_after_rescoring_val(gated, openai_server):
    (gated / "prompts/system.j2").write_text("Classify the ticket, please.")
    result = gate(gated, "prompts/system.j2")
    assert result.exit_code == 0, result.output
    assert ("triage: val 0.500 → 0.500 (+0.000, tolerance 0.000) PASS  [prompts/system.j2 changed]"
            in result.stdout)
    assert openai_server.attempts == 2  # the val split only


def test_gate_fails_a_regression_naming_each_instance(gated, openai_server):
    (gated / "prompts/system.j2").write_text(WORSE_PROMPT)
    result = gate(gated, "prompts/system.j2")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "triage: val 0.500 → 0.000 (-0.500, tolerance 0.000) FAIL  [prompts/system.j2 changed]"
    assert lines[1].startswith("  regressed a1: 1.00 → 0.00  'no idea'  \"expected 'bug', got 'no idea'")
    assert not any("a2" in line for line in lines)  # a2 was wrong before too: not a regression
    assert ("gate: val score of triage dropped more than 0.000 below the baseline; fix the prompt, or accept the "
            "new score with `gepa-tune eval --update-baseline triage` and commit gepa.lock") in result.stderr
    # accepting the new score makes the gate pass again, without asking the model
    assert run("-C", str(gated), "eval", "--update-baseline").exit_code == 0
    openai_server.reset()
    assert gate(gated, "prompts/system.j2").exit_code == 0 and openai_server.attempts == 0


def test_gate_tolerance_from_option_or_gepa_yaml(gated):
    (gated / "prompts/system.j2").write_text(WORSE_PROMPT)
    assert gate(gated, "--tolerance", "0.5", "prompts/system.j2").exit_code == 0
    config = (gated / "gepa.yaml").read_text()
    (gated / "gepa.yaml").write_text(config + "gate:\n  tolerance: 0.5\n")
    result = gate(gated, "prompts/system.j2")
    assert result.exit_code == 0 and "(-0.500, tolerance 0.500) PASS" in result.stdout
    assert gate(gated, "--tolerance", "0.1", "prompts/system.j2").exit_code == 1  # the option wins
    (gated / "gepa.yaml").write_text(config + "gate:\n  tolerance: 2\n")
    result = run("-C", str(gated), "check")
    assert result.exit_code == 2
    assert f"error: gepa.yaml:{config.count(chr(10)) + 2}: gate.tolerance: must be at most 1, got 2" in result.stderr


def test_gate_without_a_model_warns_visibly_and_passes_unless_strict(gated, openai_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    (gated / "prompts/system.j2").write_text(WORSE_PROMPT)
    result = gate(gated, "prompts/system.j2")
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: gate SKIPPED for triage: no model configured, so the changed "
                                    "prompts were NOT checked for regressions; set OPENAI_API_KEY")
    result = gate(gated, "--strict", "prompts/system.j2")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: gepa.yaml:1: lm: no model configured, so the gate cannot re-score triage; set OPENAI_API_KEY "
        "(the variable lm.api_key_env names), or lm.base_url in gepa.yaml / OPENAI_BASE_URL for another "
        "OpenAI-compatible server, or lm.provider: local")
    assert openai_server.attempts == 0
    # an endpoint without a key is a model too (llama.cpp, vLLM, ...)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    assert gate(gated, "prompts/system.j2").exit_code == 1


def test_gate_counts_a_local_provider_as_a_model():
    from gepa_action.config import LMConfig
    from gepa_action.lm.session import model_configured

    class Local:
        provider = "local"

    assert model_configured(Local(), {}) is True  # type: ignore[arg-type]
    assert model_configured(LMConfig(), {}) is False
    assert model_configured(LMConfig(), {"OPENAI_API_KEY": "k"}) is True


def test_gate_without_a_baseline_warns_and_passes_unless_strict(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    write_workspace(tmp_path)
    result = gate(tmp_path, "prompts/system.j2")
    assert result.exit_code == 0
    assert ("warning: gate: task 'triage' has no baseline in gepa.lock (there is none); not checked. Record one "
            "with `gepa-tune eval --update-baseline triage` and commit gepa.lock") in result.stderr
    result = gate(tmp_path, "--strict", "prompts/system.j2")
    assert result.exit_code == 2
    assert "error: gepa.lock: task 'triage' has no baseline" in result.stderr
    assert openai_server.attempts == 0


def test_gate_ignores_unrelated_files_and_rescores_on_config_changes(gated, openai_server):
    assert gate(gated, "README.md").output == ""
    config = (gated / "gepa.yaml").read_text()
    (gated / "gepa.yaml").write_text(config.replace("task_model: test-model", "task_model: other-model"))
    result = gate(gated, "gepa.yaml")
    assert result.exit_code == 0, result.output
    assert "PASS  [task model test-model -> other-model]" in result.stdout
    assert openai_server.attempts == 2
    assert "PASS  [task model" in gate(gated).stdout  # no FILES (run by hand): every task


def test_gate_with_nothing_to_compare_warns_unless_strict(gated):
    from fakes.workspace_factory import jsonl

    (gated / "evals/set.jsonl").write_text(jsonl([{**row, "split": "test"} for row in ROWS]))
    result = gate(gated, "evals/set.jsonl")
    assert result.exit_code == 0
    assert "warning: gate: task 'triage': the val split is empty now; nothing to compare" in result.stderr
    result = gate(gated, "--strict", "evals/set.jsonl")
    assert result.exit_code == 2 and "error: gepa.lock: nothing to compare for triage" in result.stderr


# ------------------------------------------------------------------------------------ with pre-commit


def git(cwd: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def pre_commit(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "pre-commit"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def git_env(tmp_path: Path, server_url: str | None, pre_commit_home: Path) -> dict[str, str]:
    """An environment for git and pre-commit that ignores the machine's git config and reaches the fake server."""
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "OPENAI_", "PRE_COMMIT"))}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", PRE_COMMIT_HOME=str(pre_commit_home),
               PRE_COMMIT_COLOR="never", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    if server_url:
        env.update(OPENAI_BASE_URL=server_url, OPENAI_API_KEY=KEY)
    return env


def git_workspace(root: Path, config: str) -> Path:
    """A git repository holding a workspace, its baseline and a .pre-commit-config.yaml."""
    root.mkdir()
    write_workspace(root)
    (root / ".pre-commit-config.yaml").write_text(config)
    assert run("-C", str(root), "eval", "--update-baseline").exit_code == 0
    return root


def local_hooks_config() -> str:
    """The hooks exactly as .pre-commit-hooks.yaml defines them, but run from this virtualenv
    (`language: system`) instead of one pre-commit builds with pip."""
    hooks = yaml.safe_load(MANIFEST.read_text())
    for hook in hooks:
        hook["language"] = "system"
    return yaml.safe_dump({"repos": [{"repo": "local", "hooks": hooks}]}, sort_keys=False)


def test_git_commit_and_push_run_the_hooks(tmp_path, openai_server):
    """Installed git hooks: a good commit passes, a broken template stops the commit with its error line,
    a regressed prompt stops the push, and fixing it lets the push through."""
    openai_server.responder = scripted_model
    env = git_env(tmp_path, openai_server.url, tmp_path / "pre-commit-home")
    ws = tmp_path / "ws"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", openai_server.url)
        mp.setenv("OPENAI_API_KEY", KEY)
        git_workspace(ws, local_hooks_config())
    git(ws, "init", "-q", env=env)
    installed = pre_commit(ws, "install", "--hook-type", "pre-commit", "--hook-type", "pre-push", env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    git(ws, "add", "-A", env=env)
    first = git(ws, "commit", "-qm", "workspace and baseline", env=env)
    assert re.search(r"gepa-tune check .*Passed", first.stdout + first.stderr)

    (ws / "prompts/system.j2").write_text("Classify {{ text ")
    git(ws, "add", "-A", env=env)
    broken = git(ws, "commit", "-qm", "broken template", env=env, check=False)
    assert broken.returncode != 0
    assert "error: prompts/system.j2:1: template syntax error:" in broken.stdout + broken.stderr

    (ws / "prompts/system.j2").write_text(WORSE_PROMPT)
    git(ws, "add", "-A", env=env)
    git(ws, "commit", "-qm", "a worse prompt", env=env)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote), env=env)
    git(ws, "remote", "add", "origin", str(remote), env=env)
    openai_server.reset()
    push = git(ws, "push", "origin", "HEAD:main", env=env, check=False)
    output = push.stdout + push.stderr
    assert push.returncode != 0, output
    assert "triage: val 0.500 → 0.000 (-0.500, tolerance 0.000) FAIL" in output
    assert "regressed a1: 1.00 → 0.00" in output
    assert openai_server.attempts == 2

    (ws / "prompts/system.j2").write_text(GOOD_PROMPT)
    git(ws, "commit", "-qam", "back to the good prompt", env=env)
    push = git(ws, "push", "origin", "HEAD:main", env=env, check=False)
    assert push.returncode == 0, push.stdout + push.stderr
    assert "triage: unchanged since its baseline (val 0.500) PASS" in push.stdout + push.stderr


def hook_env_cache() -> Path:
    """Where pre-commit keeps the hook's virtualenv between test runs (and across clones of this repo).

    Building it pip-installs the package and its dependencies (the slow part); it is rebuilt only when the
    package's files change. Override with GEPA_TEST_CACHE.
    """
    base = os.environ.get("GEPA_TEST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(base) / "gepa-tune-tests"


def snapshot_hooks_repo(dest: Path) -> str:
    """A git repository of the package as it is in this working tree (committed or not), at `dest`.

    pre-commit installs a hook repository from git, by commit. The commit is made with fixed names and
    dates, so the same files give the same sha and pre-commit reuses the environment it built for it.
    """
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", "pyproject.toml", "README.md",
                             ".pre-commit-hooks.yaml", "gepa_action"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("this checkout is not a git repository")
    shutil.rmtree(dest, ignore_errors=True)
    for name in listed.stdout.splitlines():
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / name, dest / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="snapshot",
               GIT_AUTHOR_EMAIL="snapshot@localhost", GIT_COMMITTER_NAME="snapshot",
               GIT_COMMITTER_EMAIL="snapshot@localhost", GIT_AUTHOR_DATE="2000-01-01T00:00:00Z",
               GIT_COMMITTER_DATE="2000-01-01T00:00:00Z")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        git(dest, *args, env=env)
    return git(dest, "rev-parse", "HEAD", env=env).stdout.strip()


@pytest.mark.skipif(bool(os.environ.get("GEPA_SKIP_HOOK_INSTALL")), reason="GEPA_SKIP_HOOK_INSTALL is set")
def test_installable_hooks_through_pre_commit(tmp_path, openai_server):
    """The hooks as users install them (`repo:` this repository, `language: python`)."""
    cache = hook_env_cache()
    sha = snapshot_hooks_repo(cache / "hooks-repo")
    home = cache / "pre-commit"
    if (cache / "rev").is_file() and (cache / "rev").read_text() != sha:
        shutil.rmtree(home, ignore_errors=True)  # one environment at a time: each is ~100 MB
    (cache / "rev").write_text(sha)
    config = yaml.safe_dump({"repos": [{"repo": str(cache / "hooks-repo"), "rev": sha,
                                        "hooks": [{"id": "gepa-check"}, {"id": "gepa-eval"}]}]})
    openai_server.responder = scripted_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_BASE_URL", openai_server.url)
        mp.setenv("OPENAI_API_KEY", KEY)
        ws = git_workspace(tmp_path / "ws", config)
    env = git_env(tmp_path, openai_server.url, home)
    git(ws, "init", "-q", env=env)
    git(ws, "add", "-A", env=env)

    good = pre_commit(ws, "run", "--files", "prompts/system.j2", "evals/set.jsonl", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"gepa-tune check .*Passed", good.stdout)
    assert "regression gate" not in good.stdout  # gepa-eval is not a pre-commit-stage hook

    (ws / "prompts/system.j2").write_text("Classify {{ text ")
    broken = pre_commit(ws, "run", "--files", "prompts/system.j2", env=env)
    assert broken.returncode == 1, broken.stdout
    assert "error: prompts/system.j2:1: template syntax error:" in broken.stdout

    (ws / "prompts/system.j2").write_text(WORSE_PROMPT)
    openai_server.reset()
    gated = pre_commit(ws, "run", "gepa-eval", "--hook-stage", "manual", "--files", "prompts/system.j2", env=env)
    assert gated.returncode == 1, gated.stdout
    assert "triage: val 0.500 → 0.000 (-0.500, tolerance 0.000) FAIL" in gated.stdout
    assert openai_server.attempts == 2

    no_model = pre_commit(ws, "run", "gepa-eval", "--hook-stage", "manual", "--files", "prompts/system.j2",
                          env=git_env(tmp_path, None, home))
    assert no_model.returncode == 0, no_model.stdout
    assert "warning: gate SKIPPED for triage" in no_model.stdout  # verbose: shown although it passed
