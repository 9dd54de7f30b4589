"""What a GitHub Actions runner gives a step, for tests that drive `gepa-tune action` or `watch` in
process: the environment with fresh GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files, and the outputs read
back the way the runner parses them (`name<<DELIMITER ... DELIMITER`)."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner, Result

from gepa_action.cli import main

OUTPUT_FILE = "github_output"
SUMMARY_FILE = "step_summary"
_OUTPUT = re.compile(r"^([\w-]+)<<(\S+)\n(.*?)\n\2$", re.M | re.S)


def runner_env(folder: Path, *, repository: str, token: str, api_url: str, run_id: str,
               **extra: str) -> dict[str, str]:
    """The step's environment; the output and summary files in `folder` start empty."""
    outputs, summary = folder / OUTPUT_FILE, folder / SUMMARY_FILE
    outputs.write_text(""), summary.write_text("")
    return {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": repository, "GITHUB_TOKEN": token,
            "GITHUB_API_URL": api_url, "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": run_id,
            "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary), **extra}


def run_step(folder: Path, clone: Path, *args: str, repository: str, token: str, api_url: str, run_id: str,
             **extra: str) -> Result:
    """`gepa-tune -C clone ARGS` in process, as a runner step whose output and summary files are in `folder`."""
    env = runner_env(folder, repository=repository, token=token, api_url=api_url, run_id=run_id, **extra)
    return CliRunner().invoke(main, ["-C", str(clone), *args], env=env, catch_exceptions=False)


def read_outputs(folder: Path) -> dict[str, str]:
    """The step outputs written to `folder`'s GITHUB_OUTPUT file."""
    return {m.group(1): m.group(3) for m in _OUTPUT.finditer((folder / OUTPUT_FILE).read_text())}
