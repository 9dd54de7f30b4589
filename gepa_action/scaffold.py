"""`gepa-tune init`: write a small working workspace a team can start from."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .paths import write_inside

SCAFFOLD = Path(__file__).parent / "scaffold"
# packaged file -> where it goes in the new workspace (dot-folders do not travel well as package data)
FILES = {
    "gepa.yaml": "gepa.yaml",
    "prompts/triage/system.j2": "prompts/triage/system.j2",
    "prompts/triage/user.j2": "prompts/triage/user.j2",
    "evals/tickets.jsonl": "evals/tickets.jsonl",
    "workflow.yml": ".github/workflows/gepa-tune-eval.yml",
}


def write_scaffold(target: Path, *, force: bool = False) -> list[Path]:
    """Write the example files; refuse to overwrite anything unless `force`."""
    existing = [target / dest for dest in FILES.values() if (target / dest).exists()]
    if existing and not force:
        raise InputError(str(existing[0]), "already exists; init never overwrites your files",
                         hint="run it in an empty folder, or pass --force to overwrite")
    written = []
    for source, dest in FILES.items():
        path = target / dest
        # confined like every write: with --force, a symlink in the folder cannot redirect it elsewhere
        write_inside(target, dest, (SCAFFOLD / source).read_text(encoding="utf-8"), str(path))
        written.append(path)
    return written
