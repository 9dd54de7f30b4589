"""Everything a tuning run knows, as plain JSON-able data, so a checkpoint is a file a person can read.

The state is written after every iteration and read back by `--resume`. It holds the pool of candidates
with their per-instance val scores, the lineage, the round-robin pointers, the minibatch sampler, the
RNG state, what has been spent, and the proposals already rejected. Nothing in here is derived from
the clock or from dict ordering, so a resumed run continues exactly where the original stood.
It never holds an API key: only prompts, model outputs, scores and counters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from .pareto import evidence_score, rank_key
from .reasons import Stop, StopReason
from .run_stats import RunStats

SCHEMA = 1


def prompt_length(texts: dict[str, str]) -> int:
    """The total length of a candidate's templates, in characters (the shorter-prompt tie-break)."""
    return sum(len(text) for text in texts.values())


@dataclass
class TraceRecord:
    """One instance run through one candidate: enough to show the reflection model again later.

    Rendered messages are not stored: they follow from the candidate, the instance and `step_outputs`.
    """

    score: float
    feedback: str
    output: str
    step_outputs: list[str]
    truncated: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TraceRecord:
        return cls(**data)


@dataclass
class Candidate:
    """One set of module texts in the pool, with where it came from and how it scored on val."""

    id: int
    texts: dict[str, str]
    parents: list[int]
    origin: str  # "seed", "reflection" or "merge"
    module: str | None = None
    iteration: int = 0
    rationale: str = ""
    minibatch_ids: list[str] = field(default_factory=list)
    minibatch_before: list[float] = field(default_factory=list)
    minibatch_after: list[float] = field(default_factory=list)
    metric_calls: int = 0  # calls spent when the candidate was fully scored
    next_module: int = 0  # round-robin pointer of this lineage into the optimizable modules
    #: Proposals in a row from this candidate that came back with nothing new (see `EngineOptions.max_stale`).
    stale: int = 0
    val: dict[str, float] = field(default_factory=dict)
    val_outputs: dict[str, str] = field(default_factory=dict)

    @property
    def val_mean(self) -> float:
        return sum(self.val.values()) / len(self.val) if self.val else 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


@dataclass
class Rejection:
    """A proposal that did not make it into the pool, shown to the reflection model next time."""

    text: str
    reason: str


@dataclass
class Pending:
    """A child that beat its parent on the minibatch and waits for its val race (see `loop`).

    Its candidate carries a provisional id (negative, never a pool id) until it joins the pool, so a
    proposal can already be made from it while it is being raced; `event` is its proposal's log entry."""

    candidate: Candidate
    records: list[TraceRecord]
    event: dict[str, Any]
    #: A chained step from it did not beat it (see `rounds.Rounds.chain_round`): it is raced in the next
    #: round, beside a new proposal from it, rather than alone at the end of this one.
    race_next: bool = False
    #: Chained steps from it in a row that did not beat it (see `rounds.Rounds.patience`).
    failed_steps: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pending:
        return cls(Candidate.from_json(data["candidate"]), [TraceRecord.from_json(r) for r in data["records"]],
                   data["event"], bool(data.get("race_next", False)), int(data.get("failed_steps", 0)))


@dataclass
class EngineState:
    """The whole run state of one task. `rng` is `random.Random.getstate()` made JSON-able."""

    task: str
    seed: int
    rng: list[Any]
    candidates: list[Candidate] = field(default_factory=list)
    iteration: int = 0
    metric_calls: int = 0
    reflection_calls: int = 0
    wall_s: float = 0.0
    search_wall_s: float | None = None  # wall time of the search alone (no test scoring), set when it ends
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> ModelUsage fields (real spend)
    nominal_tokens: dict[str, list[int]] = field(default_factory=dict)  # "purpose|model" -> tokens, cache or not
    train_memo: dict[str, dict[str, TraceRecord]] = field(default_factory=dict)  # candidate id -> id -> trace
    rejected: dict[str, list[Rejection]] = field(default_factory=dict)  # "parent:module" -> rejections
    epoch: list[str] = field(default_factory=list)  # the current shuffled order of train ids
    epoch_pos: int = 0
    merges_due: int = 0
    merge_pairs_tried: list[list[int]] = field(default_factory=list)  # one entry per merge tried
    stats: RunStats = field(default_factory=RunStats)
    pending: list[Pending] = field(default_factory=list)  # children waiting for their val race
    #: Provisional ids handed out so far (see `new_provisional_id`).
    provisional_ids: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # {metric_calls, best_val}
    errors: list[str] = field(default_factory=list)
    finished: bool = False
    stop: Stop | None = None
    final: dict[str, Any] | None = None  # test scoring of seed and best, written once at the end

    @classmethod
    def new(cls, task: str, seed: int) -> EngineState:
        state = cls(task=task, seed=seed, rng=[])
        state.save_rng(random.Random(seed))
        return state

    @property
    def stop_reason(self) -> str | None:
        """Why the search ended, as the report says it."""
        return None if self.stop is None else self.stop.describe()

    # -- the RNG -----------------------------------------------------------------------------------------

    def load_rng(self) -> random.Random:
        rng = random.Random()
        version, internal, gauss = self.rng
        rng.setstate((version, tuple(internal), gauss))
        return rng

    def save_rng(self, rng: random.Random) -> None:
        version, internal, gauss = rng.getstate()
        self.rng = [version, list(internal), gauss]

    # -- the pool ----------------------------------------------------------------------------------------

    def new_provisional_id(self) -> int:
        """A negative id for a child (or the seed) waiting for its val race, never handed out before in
        this run: what is kept under a dropped child's id (its memo, its rejections) can then never be
        taken for a later child's."""
        self.provisional_ids += 1
        return -self.provisional_ids

    def candidate(self, cid: int) -> Candidate:
        """A pool member, or (negative id) a pending child."""
        if cid < 0:
            return next(p.candidate for p in self.pending if p.candidate.id == cid)
        return self.candidates[cid]

    def val_scores(self) -> dict[int, dict[str, float]]:
        return {c.id: c.val for c in self.candidates}

    def evidence(self) -> dict[int, tuple[float, ...]]:
        """What breaks ties of val (see `pareto`): the number of ancestors (accepted steps behind the
        candidate), then its smoothed score on the train instances it has been run on."""
        return {c.id: (float(len(self.ancestors(c.id))),
                       evidence_score([t.score for t in self.train_memo.get(str(c.id), {}).values()]))
                for c in self.candidates}

    def best(self) -> Candidate:
        """The candidate with the best val mean; ties go to the shorter prompt, then to the better train
        evidence, then to the oldest.

        Shorter first because val cannot tell the two apart and every call of the task pays for each
        character of its prompt forever after; a template that grew without scoring better is cost,
        not progress. Length is the templates' total text: the inputs rendered into them are the same
        for every candidate, so it orders candidates as their rendered prompts would."""
        scores, evidence = self.val_scores(), self.evidence()

        def key(cid: int) -> tuple[float, int, tuple[float, ...], int]:
            mean, train, oldest = rank_key(cid, scores, evidence)
            return (mean, -prompt_length(self.candidates[cid].texts), train, oldest)

        return self.candidates[max(scores, key=key)]

    def ancestors(self, cid: int) -> set[int]:
        seen: set[int] = set()
        stack = list(self.candidates[cid].parents)
        while stack:
            pid = stack.pop()
            if pid not in seen:
                seen.add(pid)
                stack.extend(self.candidates[pid].parents)
        return seen

    def lineage(self, cid: int) -> list[Candidate]:
        """From the seed to `cid`, following first parents (a merge lists its better parent first)."""
        chain = [self.candidates[cid]]
        while chain[-1].parents:
            chain.append(self.candidates[chain[-1].parents[0]])
        return list(reversed(chain))

    def find_texts(self, texts: dict[str, str]) -> Candidate | None:
        return next((c for c in self.candidates if c.texts == texts), None)

    def rejections(self, parent: int, module: str) -> list[Rejection]:
        return self.rejected.get(f"{parent}:{module}", [])

    def add_rejection(self, parent: int, module: str, text: str, reason: str) -> None:
        self.rejected.setdefault(f"{parent}:{module}", []).append(Rejection(text, reason))

    # -- serialization -----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The state as fresh JSON-able containers (nothing shared with the live state, so a snapshot
        stays as it was). Written by hand rather than with `dataclasses.asdict`, which deep-copies every
        string: the checkpoint is taken between rounds, on the search's critical path, and asdict made it
        a tenth of a second on a loaded machine."""
        data = _plain(self)
        data["stop"] = None if self.stop is None else self.stop.to_json()
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineState:
        data = dict(data)
        data.pop("schema", None)
        data["candidates"] = [Candidate.from_json(c) for c in data["candidates"]]
        data["train_memo"] = {cid: {iid: TraceRecord.from_json(t) for iid, t in traces.items()}
                              for cid, traces in data["train_memo"].items()}
        data["rejected"] = {key: [Rejection(**r) for r in items] for key, items in data["rejected"].items()}
        data["stats"] = RunStats.from_json(data.get("stats") or {})
        data["pending"] = [Pending.from_json(p) for p in data.get("pending") or []]
        # Checkpoints from before the counter: the next id is below every pending one.
        data.setdefault("provisional_ids", max((-p.candidate.id for p in data["pending"]), default=0))
        legacy = data.pop("stop_reason", None)  # checkpoints from before stop reasons were values
        stop = data.get("stop")
        data["stop"] = (Stop.from_json(stop) if stop else
                        Stop(StopReason.LEGACY, {"text": legacy}) if legacy else None)
        return cls(**data)


def _plain(value: Any) -> Any:
    """Dataclasses to dicts, containers copied, everything else (str, numbers, None, enums) as it is."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
