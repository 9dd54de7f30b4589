"""Reference side of the tuning bench: the `gepa` package (0.1.4) tuning the same task as `gepa-tune tune`.

Runs inside bench/.venv-ref (which holds only `gepa`), started by bench/tune_vs_reference.py:

    bench/.venv-ref/bin/python bench/reference_adapter.py SPEC.json

SPEC.json is written by the parent from gepa-tune's own loading of the workspace, so both sides see
the same instances in the same train/val/test splits, the same seed system prompt, user template,
models and request parameters:

    {"base_url", "task_model", "reflection_model", "max_tokens", "reflection_max_tokens",
     "temperature", "concurrency", "budget", "seed", "system_seed",
     "ignore_case", "ignore_whitespace", "ignore_punctuation",
     "splits": {"train": [instance, ...], "val": [...], "test": [...]}}

or, for any task shape (bench/suite.py), `"seed_candidate"` (tuned module -> template), `"fixed"`
(the other templates) and `"steps"` (per step `{"messages": [[role, module], ...], "output": var}`),
rendered here by plain `{{ name }}` substitution;

with each instance `{"id", "inputs", "expected", "notes", "user"}`: `user` is the user message that
gepa-tune renders from the instance (the user template is not tuned), `system_seed` the seed system
message as gepa-tune renders it. The adapter asks the task model over plain
HTTP (stdlib only), a batch at a time through a thread pool as wide as gepa-tune's concurrency, scores
by exact match and words its feedback as gepa-tune's `exact` metric does. The best candidate is then
scored on the test split outside the budget. One JSON object goes to stdout; gepa's log goes to stderr.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import gepa
from gepa.core.adapter import EvaluationBatch

MODULE = "system"


class ChatClient:
    """A minimal OpenAI chat-completions client: one keep-alive connection per thread, a few retries."""

    def __init__(self, base_url: str, timeout: float = 30.0, retries: int = 2) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.timeout, self.retries = timeout, retries
        self._local = threading.local()
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.failures = 0

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def complete(self, model: str, messages: list[dict[str, Any]], *, max_tokens: int, temperature: float) -> str:
        body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature}).encode()
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            conn = self._connection()
            try:
                conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
                text = json.loads(data)["choices"][0]["message"]["content"] or ""
                with self._lock:
                    self.requests[model] = self.requests.get(model, 0) + 1
                return text
            except (OSError, http.client.HTTPException, RuntimeError, ValueError, KeyError) as exc:
                last = exc
                conn.close()
                self._local.conn = None
                with self._lock:
                    self.failures += 1
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"{model}: request failed after {self.retries + 1} attempts: {last}")


# ----------------------------------------------------------------- the exact metric, as gepa-tune words it


def _quoted(value: Any, limit: int = 200) -> str:
    if isinstance(value, str):
        return f"{value[:limit]!r}... ({len(value)} chars)" if len(value) > limit else repr(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _fold(text: str, *, case: bool, whitespace: bool, punctuation: bool) -> str:
    if punctuation:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if whitespace:
        text = " ".join(text.split())
    return text.casefold() if case else text


@dataclass(frozen=True)
class ExactMatch:
    ignore_case: bool = True
    ignore_whitespace: bool = True
    ignore_punctuation: bool = False

    def _equal(self, a: str, b: str, case: bool = False, whitespace: bool = False, punctuation: bool = False) -> bool:
        opts = {"case": case or self.ignore_case, "whitespace": whitespace or self.ignore_whitespace,
                "punctuation": punctuation or self.ignore_punctuation}
        return _fold(a, **opts) == _fold(b, **opts)

    def __call__(self, output: str, expected: Any, notes: str | None) -> tuple[float, str]:
        answers = expected if isinstance(expected, list) else [expected]
        answers = [("true" if a else "false") if isinstance(a, bool) else str(a) for a in answers]
        for answer in answers:
            if self._equal(output, answer):
                return 1.0, f"correct: {_quoted(answer)}"
        wanted = _quoted(answers[0]) if len(answers) == 1 else "one of " + ", ".join(map(_quoted, answers))
        text = f"expected {wanted}, got {_quoted(output)}"
        ignored = [n for n, on in (("whitespace", self.ignore_whitespace), ("case", self.ignore_case),
                                   ("punctuation", self.ignore_punctuation)) if on]
        if ignored:
            text += " (compared ignoring " + (ignored[0] if len(ignored) == 1 else
                                              ", ".join(ignored[:-1]) + " and " + ignored[-1]) + ")"
        hint = self._near_miss(output, answers)
        if hint:
            text += f"; {hint}"
        if notes and notes.strip():
            text += f"\nNote: {notes.strip()}"
        return 0.0, text

    def _near_miss(self, output: str, answers: list[str]) -> str | None:
        for label, opt in (("letter case", "case"), ("whitespace", "whitespace"), ("punctuation", "punctuation")):
            if any(self._equal(output, a, **{opt: True}) for a in answers):
                return f"the output differs from the answer only in {label}"
        loose = _fold(output, case=True, whitespace=True, punctuation=True)
        for answer in answers:
            core = _fold(answer, case=True, whitespace=True, punctuation=True)
            if core and re.search(rf"(?<!\w){re.escape(core)}(?!\w)", loose):
                return "the answer appears in the output, but with extra text around it"
        return None


# --------------------------------------------------------------------------------------- the adapter


@dataclass
class Rollout:
    """What one instance saw and produced; kept for the reflective dataset."""

    inputs: dict[str, Any]
    output: str
    score: float
    feedback: str


@dataclass
class TicketAdapter:
    """A GEPAAdapter for a one-call task: system prompt = the candidate, user = the rendered template."""

    client: ChatClient
    model: str
    metric: ExactMatch
    max_tokens: int
    temperature: float
    pool: ThreadPoolExecutor
    metric_calls: int = 0
    evaluate_calls: int = 0
    call_sizes: list[int] = field(default_factory=list)
    counting: bool = True
    #: A pipeline (spec "steps"): per step, its messages as [role, module] and the variable its output
    #: sets. None: one call, the candidate's system message and the instance's pre-rendered user message.
    steps: list[dict[str, Any]] | None = None
    fixed: dict[str, str] = field(default_factory=dict)  # templates that are not tuned
    #: gepa looks this attribute up; None means "use gepa's own reflection prompt and parsing".
    propose_new_texts: ClassVar[None] = None

    def _run_one(self, instance: dict[str, Any], candidate: dict[str, str]) -> Rollout:
        try:
            output = self._pipeline(instance, candidate) if self.steps else self._call(
                [{"role": "system", "content": candidate[MODULE]}, {"role": "user", "content": instance["user"]}])
        except RuntimeError as exc:
            return Rollout(instance["inputs"], "", 0.0, f"the task model failed: {exc}")
        score, feedback = self.metric(output, instance["expected"], instance.get("notes"))
        return Rollout(instance["inputs"], output, score, feedback)

    def _call(self, messages: list[dict[str, str]]) -> str:
        return self.client.complete(self.model, messages, max_tokens=self.max_tokens, temperature=self.temperature)

    def _pipeline(self, instance: dict[str, Any], candidate: dict[str, str]) -> str:
        """Each step's messages rendered from the candidate (or the fixed templates); `{{ name }}` only."""
        variables = {k: str(v) for k, v in instance["inputs"].items()}
        output = ""
        for step in self.steps or []:
            messages = [{"role": role, "content": substitute(candidate.get(module, self.fixed.get(module, "")),
                                                               variables)}
                        for role, module in step["messages"]]
            output = self._call(messages)
            if step.get("output"):
                variables[step["output"]] = output
        return output

    def evaluate(self, batch: list[dict[str, Any]], candidate: dict[str, str],
                 capture_traces: bool = False) -> EvaluationBatch:
        rollouts = list(self.pool.map(lambda inst: self._run_one(inst, candidate), batch))
        if self.counting:
            self.metric_calls += len(batch)
            self.evaluate_calls += 1
            self.call_sizes.append(len(batch))
        return EvaluationBatch(outputs=[r.output for r in rollouts], scores=[r.score for r in rollouts],
                               trajectories=rollouts if capture_traces else None)

    def make_reflective_dataset(self, candidate: dict[str, str], eval_batch: EvaluationBatch,
                                components_to_update: list[str]) -> dict[str, list[dict[str, Any]]]:
        records = [{"Inputs": dict(r.inputs), "Generated Outputs": r.output, "Feedback": r.feedback}
                   for r in eval_batch.trajectories or []]
        return {name: records for name in components_to_update}


def substitute(template: str, variables: dict[str, str]) -> str:
    """The bench's templates use plain `{{ name }}` placeholders only (no Jinja in this virtualenv)."""
    return re.sub(r"{{\s*(\w+)\s*}}", lambda m: variables.get(m.group(1), ""), template).strip()


class ReflectionModel:
    """gepa's `reflection_lm`: a prompt (text or chat messages) in, the reply text out."""

    def __init__(self, client: ChatClient, model: str, max_tokens: int, temperature: float) -> None:
        self.client, self.model = client, model
        self.max_tokens, self.temperature = max_tokens, temperature
        self.calls = 0

    def __call__(self, prompt: str | list[dict[str, Any]]) -> str:
        self.calls += 1
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self.client.complete(self.model, messages, max_tokens=self.max_tokens, temperature=self.temperature)


class StderrLog:
    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    client = ChatClient(spec["base_url"], timeout=float(spec.get("timeout", 30)), retries=int(spec.get("retries", 2)))
    metric = ExactMatch(spec.get("ignore_case", True), spec.get("ignore_whitespace", True),
                        spec.get("ignore_punctuation", False))
    splits = spec["splits"]
    with ThreadPoolExecutor(max_workers=int(spec["concurrency"])) as pool:
        adapter = TicketAdapter(client, spec["task_model"], metric,
                                int(spec["max_tokens"]), float(spec["temperature"]), pool)
        reflection = ReflectionModel(client, spec["reflection_model"], int(spec["reflection_max_tokens"]),
                                     float(spec["temperature"]))
        seed_candidate = spec.get("seed_candidate") or {MODULE: spec["system_seed"]}
        if spec.get("steps"):
            adapter.steps, adapter.fixed = spec["steps"], spec.get("fixed", {})
        start = time.perf_counter()
        result = gepa.optimize(
            seed_candidate=seed_candidate,
            trainset=splits["train"],
            valset=splits["val"],
            adapter=adapter,
            reflection_lm=reflection,
            max_metric_calls=int(spec["budget"]),
            seed=int(spec["seed"]),
            logger=StderrLog(),
        )
        tune_s = time.perf_counter() - start
        if reflection.calls == 0 and max(result.val_aggregate_scores) < 1:
            raise SystemExit("gepa never called the reflection model (see the log above for the swallowed error)")
        best = result.best_candidate
        adapter.counting = False  # the test score is outside the budget, as in gepa-tune
        test = adapter.evaluate(splits["test"], best)
        seed_test = adapter.evaluate(splits["test"], seed_candidate)
        wall_s = time.perf_counter() - start
    val_scores = list(result.val_aggregate_scores)
    return {
        "test_score": sum(test.scores) / len(test.scores),
        "seed_test_score": sum(seed_test.scores) / len(seed_test.scores),
        "val_score": val_scores[result.best_idx],
        "seed_val_score": val_scores[0],
        "calls_used": adapter.metric_calls,
        "calls_reported": result.total_metric_calls,
        "budget": int(spec["budget"]),
        "evaluate_calls": adapter.evaluate_calls,
        "largest_evaluate_batch": max(adapter.call_sizes, default=0),
        "candidates": result.num_candidates,
        "full_val_evals": result.num_full_val_evals,
        "reflection_calls": reflection.calls,
        "requests": dict(client.requests),
        "request_failures": client.failures,
        "tune_s": round(tune_s, 3),
        "wall_s": round(wall_s, 3),
        "best_candidate": "\n".join(best[name] for name in sorted(best)),
        "sizes": {name: len(rows) for name, rows in splits.items()},
    }


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: reference_adapter.py SPEC.json")
    with open(sys.argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
