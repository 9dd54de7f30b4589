"""Score a workspace's committed templates on an eval split: the `gepa-tune eval` flow, shared with the
pre-push gate (`hooks.py`) and the baseline lock (`baseline.py`), so it lives outside the CLI.

Not to be confused with `evals.py`, which loads and splits the eval sets this module scores on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .lm.client import LMClient, Usage
from .lm.session import with_client
from .runner import TaskRunner, Trace, mean
from .workspace import Task, Workspace


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


def run_eval(workspace: Workspace, tasks: list[Task], split: str, *, use_cache: bool = True,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[list[TaskResult], Usage]:
    """Synchronous entry point: results plus what the run spent."""

    async def work(lm: LMClient) -> tuple[list[TaskResult], Usage]:
        return await evaluate_tasks(tasks, split, lm, progress), lm.usage

    return with_client(workspace, work, use_cache=use_cache)
