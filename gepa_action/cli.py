"""The `gepa-tune` command line. Click commands only: the work lives in the modules they call."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import GepaError, InputError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def friendly_errors(func: F) -> F:
    """Turn the tool's own errors into one line on stderr and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GepaError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: answers received so far are kept in the response cache", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


class Context:
    """Where the workspace is, as given by -C / --config."""

    def __init__(self, directory: Path | None, config: Path | None) -> None:
        self.directory = directory
        self.config = config

    def load(self, errors: list[InputError] | None = None):  # noqa: ANN201 - returns a Workspace
        from .workspace import find_config, load_workspace

        return load_workspace(find_config(self.directory, self.config), errors)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Run as if started in DIR (gepa.yaml is looked up from there).")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this config file instead of the nearest gepa.yaml.")
@click.version_option(__version__, prog_name="gepa-tune")
@click.pass_context
def main(ctx: click.Context, directory: Path | None, config: Path | None) -> None:
    """Tune LLM prompts like code: Jinja templates in git, versioned eval sets, measured changes.

    \b
    Exit codes: 0 ok, 1 the run failed (e.g. the endpoint kept failing),
    2 bad input (config, template or eval file; unknown task), 130 interrupted.
    """
    ctx.obj = Context(directory, config)


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@click.pass_obj
@friendly_errors
def init(obj: Context, directory: Path | None, force: bool) -> None:
    """Create a working example workspace: gepa.yaml, a prompt, an eval set and a workflow file."""
    from .scaffold import write_scaffold

    target = directory or obj.directory or Path.cwd()
    written = write_scaffold(target, force=force)
    for path in written:
        click.echo(f"created {path}")
    click.echo("next: `gepa-tune check`, then set OPENAI_API_KEY (or lm.base_url) and run `gepa-tune eval`")


@main.command()
@click.argument("tasks", nargs=-1)
@click.pass_obj
@friendly_errors
def check(obj: Context, tasks: tuple[str, ...]) -> None:
    """Validate config, templates and eval sets offline; report every problem as FILE:LINE."""
    from .evals import split_counts

    errors: list[InputError] = []
    workspace = obj.load(errors)
    # With broken tasks skipped, an unknown name may be one of them: only insist when all loaded.
    selected = workspace.select(tasks) if not errors else [t for t in workspace.tasks if not tasks or t.name in tasks]
    for warning in workspace.warnings:
        click.echo(f"warning: {warning}", err=True)
    for task in selected:
        es = task.eval_set
        counts = split_counts(es)
        click.echo(f"ok  {task.name}: {len(task.modules)} template(s), {es.name}@{es.version} "
                   f"sha256:{es.sha256[:12]}, {len(es.instances)} instances "
                   f"(train {counts['train']}, val {counts['val']}, test {counts['test']}), metric {task.metric.name}")
        if counts["val"] == 0:
            click.echo(f"warning: {es.file}: task '{task.name}' has no val instances; adjust split fractions "
                       "or give instances split: val", err=True)
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if errors:
        sys.exit(EXIT_BAD_INPUT)


@main.command("eval")
@click.argument("tasks", nargs=-1)
@click.option("--split", type=click.Choice(["val", "test", "train", "all"]), default="val", show_default=True,
              help="Which instances to score.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--no-cache", is_flag=True, help="Ignore the response cache under .gepa/ (neither read nor write).")
@click.pass_obj
@friendly_errors
def eval_command(obj: Context, tasks: tuple[str, ...], split: str, as_json: bool, no_cache: bool) -> None:
    """Score the current prompts on an eval split, per instance, with the aggregate."""
    from .evaluate import format_results, run_eval, terminal_progress

    workspace = obj.load()
    selected = workspace.select(tasks)
    for warning in workspace.warnings:
        click.echo(f"warning: {warning}", err=True)
    results, usage = run_eval(workspace, selected, split, use_cache=not no_cache,
                              progress=terminal_progress())
    if as_json:
        click.echo(json.dumps({"tasks": [r.to_dict() for r in results], "usage": usage.to_dict()}, indent=2,
                              ensure_ascii=False))
    else:
        click.echo(format_results(results, usage))


def entry() -> None:
    """Console-script entry point: run the CLI, flush, and leave without the interpreter's teardown.

    Once the openai SDK is loaded, Python spends ~0.4 s at exit tearing down its thousands of classes,
    which is a third of a small eval's wall time. Everything we own is closed by then (the cache is
    closed by the commands; SQLite commits on every write), so skipping it loses nothing. Tests drive
    `main` in-process through CliRunner instead, where exiting this way would be wrong.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`) is not our failure
            stream.flush()
    os._exit(code)
