"""Terminal output: the CLI's one truncation helper (what `eval`, `tune` and the pre-commit gate print in
their columns) and `tune`'s live progress."""

from __future__ import annotations

import io

from gepa_action.engine.state import Candidate, EngineState
from gepa_action.render.terminal import progress_printer, quoted, shorten


def test_shorten_puts_text_on_one_line_and_cuts_it_to_the_width() -> None:
    assert shorten("a\n\n b\tc", 10) == "a b c"
    assert shorten("x" * 30, 10) == "x" * 9 + "…"
    assert len(shorten("word " * 40, 24)) == 24


def test_a_cut_keeps_the_space_before_the_ellipsis_so_columns_stay_as_they_were() -> None:
    assert shorten("abcd efgh", 6) == "abcd …"


def test_quoted_shows_an_empty_output() -> None:
    assert quoted("", 30) == "''"
    assert quoted("it's\nfine", 30) == '"it\'s fine"'
    assert quoted("y" * 50, 30) == repr("y" * 29 + "…")


class _Screen(io.StringIO):
    """A stream that says it is a terminal, as stderr does when a person watches the run."""

    def isatty(self) -> bool:
        return True


def _state(*val_means: float, finished: bool = False) -> EngineState:
    state = EngineState.new("triage", 0)
    state.candidates = [Candidate(id=i, texts={}, parents=[], origin="seed" if i == 0 else "reflection",
                                  val={"v1": score}) for i, score in enumerate(val_means)]
    state.metric_calls, state.iteration, state.finished = 40, 2, finished
    state.usage = {"gpt-4o-mini": {"cost_usd": 0.0125}}
    return state


def test_tune_progress_in_a_log_is_one_line_per_new_best_and_one_when_done() -> None:
    log = io.StringIO()
    show = progress_printer(log)
    show("triage", EngineState.new("triage", 0), 300)  # nothing scored yet: nothing to say
    show("triage", _state(0.5), 300)
    show("triage", _state(0.5), 300)  # same best: a CI log does not repeat it
    show("triage", _state(0.5, 0.75), None)
    show("triage", _state(0.5, 0.75, finished=True), None)
    show("triage", _state(0.5, 0.75, finished=True), None)
    assert log.getvalue() == (
        "triage: best val 0.500  calls 40/300  $0.0125  round 2\n"
        "triage: best val 0.750  calls 40  $0.0125  round 2\n"
        "triage: best val 0.750  calls 40  $0.0125  round 2  (done)\n")


def test_tune_progress_on_a_terminal_rewrites_one_line_for_all_tasks() -> None:
    screen = _Screen()
    show = progress_printer(screen)
    show("triage", _state(0.5), 300)
    show("route", _state(0.25, finished=True), 300)
    assert screen.getvalue() == (
        "\r\033[Ktriage: best val 0.500  calls 40/300  $0.0125  round 2"
        "\r\033[Ktriage: best val 0.500  calls 40/300  $0.0125  round 2   "
        "route: best val 0.250  calls 40/300  $0.0125  round 2\n")
