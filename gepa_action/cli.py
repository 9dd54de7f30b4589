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


@main.command()
@click.argument("tasks", nargs=-1)
@click.option("--budget", type=click.IntRange(min=1), help="Max metric calls per task (overrides gepa.yaml).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run's random choices.")
@click.option("--strategy", type=click.Choice(["pareto", "best"]), default="pareto", show_default=True,
              help="Parent selection: the per-instance Pareto front, or always the best (for comparison).")
@click.option("--minibatch", type=click.IntRange(min=1), default=3, show_default=True,
              help="Train instances shown to the reflection model per proposal.")
@click.option("--parallel", type=click.IntRange(min=1, max=32), default=1, show_default=True,
              help="Proposals made concurrently per round (shorter wall time, same budget accounting).")
@click.option("--max-merges", type=click.IntRange(min=0), default=5, show_default=True,
              help="Merges to try (tasks with two or more optimized templates).")
@click.option("--resume", "resume", metavar="RUN_ID", help="Continue an interrupted run (options come from it).")
@click.option("--write", is_flag=True, help="Write the best templates into the workspace when the run ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report (report.json) instead of text.")
@click.option("--no-cache", is_flag=True, help="Ignore the response cache under .gepa/ (neither read nor write).")
@click.pass_obj
@friendly_errors
def tune(obj: Context, tasks: tuple[str, ...], budget: int | None, seed: int, strategy: str, minibatch: int,
         parallel: int, max_merges: int, resume: str | None, write: bool, as_json: bool, no_cache: bool) -> None:
    """Evolve the prompts with GEPA within the budget; score seed and best on the held-out test split.

    \b
    The run lives in .gepa/runs/RUN_ID/ (checkpoints, events.jsonl, report.json, report.md).
    Create the file .gepa/runs/RUN_ID/STOP to end a run after its current step.
    Exit codes: 0 finished, 1 the run failed (report written), 2 bad input, 130 interrupted (resumable).
    """
    from .tune import TuneOptions, progress_printer, raise_for, run_tune

    workspace = obj.load()
    if resume and (tasks or budget is not None):
        raise InputError("--resume", "a resumed run keeps its tasks and budget",
                         hint="drop the task names and --budget, or start a new run")
    selected = workspace.select(tasks)
    for warning in workspace.warnings:
        click.echo(f"warning: {warning}", err=True)
    options = TuneOptions(seed=seed, budget=budget, strategy=strategy, minibatch=minibatch, parallel=parallel,
                          max_merges=max_merges)
    result = run_tune(workspace, selected, options, resume=resume, use_cache=not no_cache,
                      progress=None if as_json else progress_printer())
    _show_report(workspace, result.report, result.run.path, as_json=as_json, write=write)
    raise_for(result)


@main.command()
@click.argument("run_id", required=False, default="latest")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the Markdown report.")
@click.option("--write", is_flag=True, help="Write the run's best templates into the workspace.")
@click.pass_obj
@friendly_errors
def report(obj: Context, run_id: str, as_json: bool, write: bool) -> None:
    """Re-render a run's report from its checkpoints (RUN_ID defaults to the latest run)."""
    from .runs import RunDir
    from .tune import rerender

    workspace = obj.load()
    run = RunDir.open(workspace.root, run_id)
    data = rerender(workspace, run)
    if as_json:
        click.echo(json.dumps(data, indent=1, ensure_ascii=False))
    else:
        click.echo((run.path / "report.md").read_text(encoding="utf-8"))
    if write:
        _write_best(workspace, data)


def _write_best(workspace: Any, data: dict[str, Any]) -> None:
    from .tune import write_templates

    written = write_templates(workspace, data)
    for module in written:
        click.echo(f"wrote {module}", err=True)
    if not written:
        click.echo("nothing to write: the seed templates stayed best", err=True)


def _show_report(workspace: Any, data: dict[str, Any], path: Path, *, as_json: bool, write: bool) -> None:
    from .report_md import render_summary_line

    if as_json:
        click.echo(json.dumps(data, indent=1, ensure_ascii=False))
    else:
        for task in data["tasks"]:
            click.echo(render_summary_line(task))
            if task.get("stop_reason"):
                click.echo(f"  stopped: {task['stop_reason']}")
            diff = (task.get("best") or {}).get("diff")
            click.echo(diff.rstrip("\n") if diff else "  no change: the seed templates stayed best")
            changed = [r for r in task["instances"] if r["split"] == "test" and r["delta"] != 0]
            changed.sort(key=lambda r: (r["delta"] > 0, r["id"]))
            for row in changed:
                click.echo(f"  test {row['id']}: {row['before']:.2f} -> {row['after']:.2f}  "
                           f"{_short(row['output_before'])} -> {_short(row['output_after'])}")
        rel = workspace.relative(path)
        click.echo(f"report: {rel}/report.md (JSON: {rel}/report.json)")
    if write:
        _write_best(workspace, data)
    elif not as_json and any((t.get("best") or {}).get("changed_modules") for t in data["tasks"]):
        click.echo(f"templates unchanged in the workspace: apply with `gepa-tune report {path.name} --write`",
                   err=True)


def _short(text: str, width: int = 30) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


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
