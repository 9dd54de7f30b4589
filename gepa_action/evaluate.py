"""Score a workspace's current prompts on an eval split: shared by `gepa-tune eval` and, later, the
regression gate and the Action, so it lives outside the CLI."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .cache import ResponseCache
from .errors import RunError
from .lm import LMClient, Route, Usage, resolve_endpoint
from .local_model import local_routes
from .task import TaskRunner, Trace, mean
from .workspace import Task, Workspace

CACHE_FILE = Path(".gepa") / "cache.sqlite3"
T = TypeVar("T")


@dataclass
class TaskResult:
    task: Task
    split: str
    traces: list[Trace]

    @property
    def mean_score(self) -> float | None:
        return mean(t.score for t in self.traces)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "model": self.task.model,
            "split": self.split,
            "eval_set": self.task.eval_set.ref(),
            "mean_score": self.mean_score,
            "count": len(self.traces),
            "instances": [
                {"id": t.instance_id, "split": t.split, "score": t.score, "feedback": t.feedback,
                 "output": t.output, "truncated": t.truncated}
                for t in self.traces
            ],
        }


def open_client(workspace: Workspace, *, use_cache: bool = True,
                environ: dict[str, str] | None = None, routes: Mapping[str, Route] | None = None) -> LMClient:
    """The LM client for a workspace: endpoint from config or environment, cache under `.gepa/`.

    With `lm.provider: local`, `routes` are the local servers' (from `local_model.local_routes`, which
    must be running around the client's use); no key and no other endpoint are involved.
    """
    cache = ResponseCache(workspace.root / CACHE_FILE) if use_cache else None
    if workspace.lm.provider == "local":
        if not routes:
            raise RunError("lm.provider local: the local model servers are not running "
                           "(open the client inside local_model.local_routes)")
        first = next(iter(routes.values())).base_url
        return LMClient(workspace.lm, api_key=None, base_url=first, cache=cache, routes=routes,
                        secrets=secrets_of(os.environ if environ is None else environ))
    env = os.environ if environ is None else environ
    base_url, api_key = resolve_endpoint(workspace.lm, env)
    return LMClient(workspace.lm, api_key=api_key, base_url=base_url, cache=cache, routes=routes,
                    secrets=secrets_of(env))


def secrets_of(environ: Mapping[str, str]) -> tuple[str | None, ...]:
    """Secrets besides the model key that a run can see and an answer must never carry: a server that
    echoes headers or the environment would otherwise put them into the cache, the report and the PR."""
    return tuple(environ.get(name) for name in ("GITHUB_TOKEN", "GH_TOKEN", "GEPA_TUNE_API_KEY", "OPENAI_API_KEY"))


async def evaluate_tasks(tasks: list[Task], split: str, lm: LMClient,
                         progress: Callable[[str, int, int], None] | None = None) -> list[TaskResult]:
    """Score each task's current templates on `split`; all tasks and instances run concurrently."""

    async def one(task: Task) -> TaskResult:
        instances = task.eval_set.by_split(split)
        total = len(instances)

        def report(done: int) -> None:
            if progress is not None:
                progress(task.name, done, total)

        traces = await TaskRunner(task, lm).run_many(task.seed_candidate(), instances, report)
        return TaskResult(task, split, traces)

    return list(await asyncio.gather(*(one(task) for task in tasks)))


def with_client(workspace: Workspace, work: Callable[[LMClient], Awaitable[T]], *, use_cache: bool = True) -> T:
    """Run `work` with the workspace's client in a fresh event loop, and close everything after. With
    `lm.provider: local` the local servers live exactly as long (stopped on Ctrl-C too)."""

    async def main(routes: Mapping[str, Route] | None) -> T:
        lm = open_client(workspace, use_cache=use_cache, routes=routes)
        try:
            return await work(lm)
        finally:
            await lm.aclose()
            if lm.cache is not None:
                lm.cache.close()

    with local_routes(workspace, reflection=False) as routes:
        return asyncio.run(main(routes))


def run_eval(workspace: Workspace, tasks: list[Task], split: str, *, use_cache: bool = True,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[list[TaskResult], Usage]:
    """Synchronous entry point: results plus what the run spent."""

    async def work(lm: LMClient) -> tuple[list[TaskResult], Usage]:
        return await evaluate_tasks(tasks, split, lm, progress), lm.usage

    return with_client(workspace, work, use_cache=use_cache)
