"""Confinement of workspace reads and writes (gepa_action/paths.py) with real symlinks, FIFOs and threads."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.report_factory import report_of, task_report
from fakes.workspace_factory import make_workspace

from gepa_action.cli import main
from gepa_action.errors import InputError
from gepa_action.paths import confine, read_text_inside, write_inside
from gepa_action.report.model import Best
from gepa_action.tune import write_templates
from gepa_action.workspace import find_config, load_workspace


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("outside\n", encoding="utf-8")
    return root


def test_write_replaces_atomically_and_keeps_the_mode(repo: Path) -> None:
    target = repo / "prompts" / "a.j2"
    target.parent.mkdir()
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o640)
    write_inside(repo, "prompts/a.j2", "new\n")
    assert target.read_text(encoding="utf-8") == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.j2"], "no temporary file is left behind"


def test_write_creates_missing_folders(repo: Path) -> None:
    write_inside(repo, "deep/er/file.txt", "x")
    assert (repo / "deep/er/file.txt").read_text(encoding="utf-8") == "x"


def test_write_refuses_a_symlink_that_leaves_the_workspace(repo: Path, tmp_path: Path) -> None:
    (repo / "prompts").mkdir()
    (repo / "prompts/a.j2").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(InputError, match=r"prompts/a\.j2: the file is a symlink that leads outside the workspace"):
        write_inside(repo, "prompts/a.j2", "pwned", "prompts/a.j2")
    assert (tmp_path / "outside.txt").read_text(encoding="utf-8") == "outside\n"
    assert (repo / "prompts/a.j2").is_symlink()


def test_write_refuses_a_folder_symlink_and_dotdot(repo: Path, tmp_path: Path) -> None:
    (repo / "prompts").symlink_to(tmp_path)
    for path in ("prompts/new.j2", "../escape.txt", str(tmp_path / "abs.txt")):
        with pytest.raises(InputError, match="outside the workspace"):
            write_inside(repo, path, "pwned")
    assert not (tmp_path / "new.j2").exists() and not (tmp_path / "escape.txt").exists()


def test_write_follows_a_symlink_that_stays_inside(repo: Path) -> None:
    (repo / "shared").mkdir()
    (repo / "shared/base.j2").write_text("old", encoding="utf-8")
    (repo / "a.j2").symlink_to("shared/base.j2")
    write_inside(repo, "a.j2", "new")
    assert (repo / "a.j2").is_symlink() and (repo / "shared/base.j2").read_text(encoding="utf-8") == "new"


def test_concurrent_writers_never_collide_on_a_temporary_name(repo: Path) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                write_inside(repo, "f.txt", f"{n}-{i}\n" * 100)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = set((repo / "f.txt").read_text(encoding="utf-8").splitlines())
    assert len(lines) == 1, "the file holds one writer's whole content, never a mix"


def test_read_refuses_fifo_device_and_symlink_loop(repo: Path) -> None:
    os.mkfifo(repo / "pipe")
    with pytest.raises(InputError, match="not a regular file"):
        read_text_inside(repo, "pipe")  # returns at once instead of blocking for a writer
    (repo / "null").symlink_to("/dev/null")
    with pytest.raises(InputError, match="outside the workspace"):
        read_text_inside(repo, "null")
    (repo / "loop").symlink_to("loop")
    with pytest.raises(InputError):
        read_text_inside(repo, "loop")


def test_workspace_root_may_itself_be_reached_through_a_symlink(tmp_path: Path) -> None:
    real = make_workspace(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    assert confine(tmp_path / "link", "prompts/user.j2") == (real / "prompts/user.j2").resolve()
    workspace = load_workspace(find_config(tmp_path / "link"))
    assert workspace.tasks[0].templates["prompts/user.j2"].source == "Ticket: {{ text }}"


def test_write_templates_refuses_a_tampered_module_path(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "repo")
    workspace = load_workspace(find_config(root))
    report = report_of(task_report(best=Best(candidate=1, changed_modules=["../../outside-written.txt"],
                                             templates={"../../outside-written.txt": "pwned"}, diff="")))
    with pytest.raises(InputError, match="outside the workspace"):
        write_templates(workspace, report)
    assert not (tmp_path.parent / "outside-written.txt").exists()


def test_write_templates_refuses_a_template_swapped_for_a_symlink_after_loading(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "repo")
    workspace = load_workspace(find_config(root))
    (tmp_path / "victim.txt").write_text("keep me\n", encoding="utf-8")
    (root / "prompts/system.j2").unlink()
    (root / "prompts/system.j2").symlink_to(tmp_path / "victim.txt")
    report = report_of(task_report(best=Best(candidate=1, changed_modules=["prompts/system.j2"],
                                             templates={"prompts/system.j2": "pwned"}, diff="")))
    with pytest.raises(InputError, match="prompts/system.j2"):
        write_templates(workspace, report)
    assert (tmp_path / "victim.txt").read_text(encoding="utf-8") == "keep me\n"


def test_check_refuses_a_template_linked_to_the_process_environment(tmp_path: Path, monkeypatch) -> None:
    """The audit's attack: a committed prompts/x.j2 -> /proc/self/environ passed `check` and reached the model."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-auditSECRET0123456789abcdefABCDEF")
    root = make_workspace(tmp_path)
    (root / "prompts/system.j2").unlink()
    (root / "prompts/system.j2").symlink_to("/proc/self/environ")
    result = CliRunner().invoke(main, ["-C", str(root), "check"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: prompts/system.j2: the template file is a symlink that leads outside "
                                     "the workspace; keep it inside the repository and refer to it by a path "
                                     "relative to gepa.yaml")
    assert "auditSECRET" not in result.output


def test_init_force_does_not_write_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "new"
    target.mkdir()
    (tmp_path / "victim.yaml").write_text("keep: me\n", encoding="utf-8")
    (target / "gepa.yaml").symlink_to(tmp_path / "victim.yaml")
    result = CliRunner().invoke(main, ["init", str(target), "--force"])
    assert result.exit_code == 2 and "outside the workspace" in result.stderr
    assert (tmp_path / "victim.yaml").read_text(encoding="utf-8") == "keep: me\n"
