"""The engine's options and their defaults, in a module that imports nothing.

The CLI reads these defaults for its `--minibatch`, `--parallel`, ... options when it starts, so the
module must stay cheap to import: no engine, no workspace, no Jinja.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Proposals a round may make at once: more would queue behind the client's concurrency limit anyway.
MAX_PARALLEL = 32
#: The values of `EngineOptions.chain` (and of `tune --chain`).
CHAIN_MODES = ("auto", "always", "never")
#: The seed of a run's random choices when none is given (`tune --seed`, `action --seed`, `TuneOptions`).
DEFAULT_SEED = 0


@dataclass(frozen=True)
class EngineOptions:
    """How the search runs, whatever the task. The defaults here are the defaults everywhere (`TuneOptions`,
    the `tune` command's options), so they are written once."""

    strategy: str = "pareto"
    minibatch: int = 10
    parallel: int = 1
    max_merges: int = 5
    merge_subsample: int = 5
    #: Rounds in a row whose proposals were all rejected unevaluated before the run gives up: a reflection
    #: model that never writes a valid template would otherwise be paid forever for nothing.
    max_invalid_rounds: int = 12
    #: Rounds in a row that evaluate nothing (parents perfect on the minibatch, proposals that repeat
    #: earlier ones) before the run gives up, in epochs over the train split: such rounds cost no metric
    #: call, but a solved train set would otherwise loop forever. At least `max_invalid_rounds` + 1 rounds,
    #: so a run whose proposals are all invalid ends with that (clearer) reason.
    max_perfect_epochs: int = 5
    #: Follow-up turns per proposal when the reply is unusable in a way the model can fix (a copy of the
    #: template, a variable added or dropped, no fenced block, broken Jinja): the reason goes back to the
    #: reflection model in the same conversation. Small models often get it right on the second try
    #: (measured on the bundled 1.5B), and a repair costs a reflection call, never a metric call.
    repairs: int = 1
    #: Score an accepted child on val in stages and stop when it falls behind its parent (see
    #: `evaluation`); False scores every accepted child on all of val at once.
    race: bool = True
    #: While a child is raced on val, already make the next proposal from it (see `loop`): a GEPA step is
    #: a chain of dependent calls, and this overlaps the longest two links. False waits for the race.
    lookahead: bool = True
    #: When a child that beat its parent on the minibatch is first taken further on train, and only the
    #: tip of such a chain is scored on val (see `rounds.Rounds.chaining`): "auto" when one val scoring
    #: costs a step or more; "always" on a val set of any size; "never" races every child that beat its
    #: parent (more val calls, fewer steps for the same budget, a shorter wall time: the races fill the
    #: task slots while the reflection model thinks).
    chain: str = "auto"
    #: A candidate whose last `max_stale` proposals came back with nothing new (its own template, or a
    #: text already rejected or in the pool), each on other train instances and after the repair turn,
    #: is no longer chosen as a parent: the reflection model has nothing left to change there, and asking
    #: again pays reflection calls and their wait for nothing. When every candidate of the Pareto front
    #: is stale, the run ends (`StopReason.FRONT_STALE`).
    max_stale: int = 3
