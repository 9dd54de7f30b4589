"""Build the run report from the checkpoints: the typed `Report` (see `model.py`) that report.json, the
PR body, the terminal summary and `gepa-tune report` all come from.

Numbers come from the state files only, so re-rendering a report later gives the same result, and the
headline (test delta with a paired bootstrap CI) uses the test split, which no selection ever saw.
"""

from __future__ import annotations

import difflib
from typing import Any

from ..cost_model import PromptCost, TaskEstimate
from ..engine.state import EngineState
from ..runner import mean
from ..stats import paired_bootstrap_ci
from ..workspace import Task
from .guidance import guidance_report
from .model import (
    Best,
    CandidateSummary,
    Counts,
    EvalSetRef,
    HistoryPoint,
    Instances,
    Merges,
    Models,
    Proposals,
    Report,
    Row,
    Scores,
    Step,
    StoppedChildren,
    TaskReport,
    TestScore,
    Usage,
    ValScore,
    ValScoring,
)


def template_diff(seed: dict[str, str], best: dict[str, str]) -> str:
    """A unified diff per changed module, as `git diff` would show it."""
    chunks = []
    for module in seed:
        if seed[module] != best[module]:
            chunks.extend(difflib.unified_diff(
                seed[module].splitlines(keepends=True), best[module].splitlines(keepends=True),
                fromfile=f"a/{module}", tofile=f"b/{module}"))
            if chunks and not chunks[-1].endswith("\n"):
                chunks[-1] += "\n"
    return "".join(chunks)


def _row(iid: str, split: str, before: tuple[float, str], after: tuple[float, str]) -> Row:
    return Row(id=iid, split=split, before=before[0], after=after[0], delta=after[0] - before[0],
               output_before=before[1], output_after=after[1])


def _test_scores(state: EngineState) -> tuple[TestScore | None, list[Row], Counts]:
    final = state.final
    if not final or not final["seed"]:
        return None, [], Counts(improved=0, regressed=0, unchanged=0)
    rows = [_row(i, "test", tuple(final["seed"][i]), tuple(final["best_scores"][i])) for i in final["seed"]]
    counts = Counts(improved=sum(1 for r in rows if r.delta > 0), regressed=sum(1 for r in rows if r.delta < 0),
                    unchanged=sum(1 for r in rows if r.delta == 0))
    before = [r.before for r in rows]
    after = [r.after for r in rows]
    ci = paired_bootstrap_ci(before, after, seed=state.seed)
    scores = TestScore(seed=mean(before), best=mean(after), delta=ci.mean_delta,
                       ci95=ci)
    return scores, rows, counts


def _candidate_entry(state: EngineState, cid: int) -> Step:
    c = state.candidate(cid)
    return Step(candidate=c.id, parents=list(c.parents), origin=c.origin, module=c.module, iteration=c.iteration,
                rationale=c.rationale, minibatch_ids=list(c.minibatch_ids), minibatch_before=list(c.minibatch_before),
                minibatch_after=list(c.minibatch_after), val_score=c.val_mean, metric_calls=c.metric_calls)


def val_scoring(state: EngineState, val_size: int) -> ValScoring:
    """How much of val each candidate was scored on: every pool member (the winner among them) on all
    of it; children that fell behind their parent part-way were stopped and never joined the pool."""
    stopped = [StoppedChildren(val_instances=int(scored), children=count)
               for scored, count in sorted(state.stats.val_stopped_at.items(), key=lambda kv: int(kv[0]))]
    return ValScoring(val_size=val_size, pool_on_all_of_val=len(state.candidates), winner_val_instances=val_size,
                      stopped=stopped, calls_saved=state.stats.val_calls_saved)


def task_report(task: Task, state: EngineState, *, budget: int | None, reflection_model: str,
                status: str, estimate: TaskEstimate | None = None, prompt_cost: PromptCost | None = None) -> TaskReport:
    """Everything about one task's run, in the shape documented in the README (report.json)."""
    seed = state.candidate(0) if state.candidates else None
    best_id = state.final["best"] if state.final else (state.best().id if state.candidates else None)
    best = state.candidate(best_id) if best_id is not None else None
    es = task.eval_set
    sizes = {split: len(es.by_split(split)) for split in ("train", "val", "test")}
    test, test_rows, counts = _test_scores(state)
    val_rows = []
    if seed is not None and best is not None:
        val_rows = [_row(i, "val", (seed.val[i], seed.val_outputs.get(i, "")),
                         (best.val[i], best.val_outputs.get(i, ""))) for i in seed.val]
    lineage = [_candidate_entry(state, c.id) for c in state.lineage(best.id)] if best is not None else []
    usage_models = state.usage.values()
    test_calls = state.final["test_calls"] if state.final else 0
    stats = state.stats
    return TaskReport(
        task=task.name,
        description=task.description,
        status=status,
        stop_reason=state.stop_reason,
        stop_code=state.stop.reason.value if state.stop is not None else None,
        eval_set=EvalSetRef(name=es.name, version=es.version, sha256=es.sha256, path=es.file),
        models=Models(task=task.model, reflection=reflection_model, judge=getattr(task.metric, "model", None)),
        modules=list(dict.fromkeys(task.modules)),
        optimized=list(task.optimize),
        split_sizes=sizes,
        scores=Scores(
            val=(ValScore(seed=seed.val_mean, best=best.val_mean, delta=best.val_mean - seed.val_mean)
                 if seed is not None and best is not None else None),
            test=test,
        ),
        counts=counts,
        instances=Instances(test=tuple(test_rows), val=tuple(val_rows)),
        best=(Best(candidate=best.id, templates={m: best.texts[m] for m in task.optimize},
                   diff=template_diff(seed.texts, best.texts),
                   changed_modules=[m for m in seed.texts if seed.texts[m] != best.texts[m]])
              if seed is not None and best is not None else None),
        lineage=lineage,
        history=[HistoryPoint(**point) for point in state.history],
        candidates=[CandidateSummary(candidate=c.id, parents=list(c.parents), origin=c.origin, module=c.module,
                                     val_score=c.val_mean, val_instances=len(c.val), iteration=c.iteration)
                    for c in state.candidates],
        proposals=Proposals(
            total=stats.proposals,
            accepted=stats.accepted,
            rejected_invalid=dict(stats.rejected_invalid),
            rejected_not_better=stats.rejected_not_better,
            stopped_on_val=stats.raced_out,
            dropped=stats.discarded,
            skipped_perfect=stats.skipped_perfect,
            repeats=stats.repeats,
            merges=Merges(tried=len(state.merge_pairs_tried), accepted=stats.merges_accepted),
        ),
        val_scoring=val_scoring(state, sizes["val"]),
        errors=list(state.errors),
        usage=Usage(
            metric_calls=state.metric_calls,
            budget=budget,
            test_calls=test_calls,
            reflection_calls=state.reflection_calls,
            requests=int(sum(m.get("requests", 0) for m in usage_models)),
            cached=int(sum(m.get("cached", 0) for m in usage_models)),
            prompt_tokens=int(sum(m.get("prompt_tokens", 0) for m in usage_models)),
            completion_tokens=int(sum(m.get("completion_tokens", 0) for m in usage_models)),
            cost_usd=sum(m.get("cost_usd", 0.0) for m in usage_models),
            retries=int(sum(m.get("retries", 0) for m in usage_models)),
            retries_by_kind=_retries_by_kind(usage_models),
            wall_s=round(state.wall_s, 3),
            search_wall_s=state.search_wall_s,
        ),
        estimate=estimate,
        prompt_cost=prompt_cost,
        guidance=guidance_report(task.guidance, lineage, test_rows, val_rows),
    )


def _retries_by_kind(usage_models: Any) -> dict[str, int]:
    """Retries of every model of the task, summed per kind (rate_limited, server_error, invalid_reply, ...)."""
    kinds: dict[str, int] = {}
    for counters in usage_models:
        for kind, n in (counters.get("retries_by_kind") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(n)
    return dict(sorted(kinds.items()))


def run_report(meta: dict[str, Any], tasks: list[TaskReport]) -> Report:
    return Report(run_id=meta["run_id"], status=meta.get("status", "unknown"), started_at=meta.get("started_at"),
                  finished_at=meta.get("finished_at"), options=meta.get("options", {}), tasks=tasks)
