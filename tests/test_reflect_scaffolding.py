"""A reflection reply whose "template" is really the answer itself (diagnosis, headings, a fence line) must
never become a candidate, and the diagnosis the model wrote must survive as the proposal's rationale.

The replies below are shaped like the ones the bundled 1.5B model wrote on the example task: the first
turn put a fence at the end with nothing after it; the repair turn then wrapped its whole previous answer
in a fenced block, the dangling ```jinja line included, and wrote no prose before it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.workspace_factory import make_workspace

from gepa_action.engine.reflect import (
    Proposal,
    check_template,
    drop_repeated_paragraphs,
    embedded_diagnosis,
    parse_reply,
    read_proposal,
    repair_request,
    repairable,
    scaffolding_problem,
    strip_scaffolding,
    with_new_instruction,
)
from gepa_action.workspace import find_config, load_workspace

SEED = ("You are a helpful support assistant for Ledgerly. "
        "Read the customer's ticket and say what kind of request it is.")

FIRST_TURN = f"""\
{SEED}
### Diagnosis
- The model answered with a sentence instead of one of the labels.
- Tickets about charges were called bugs.
### Rule or Guidance
Answer with exactly one label: bug, billing, account, feature_request or how_to.
### Complete New Template
```jinja
"""

REPAIR_TURN = f"""\
```jinja
{SEED}
### Diagnosis
- The model answered with a sentence instead of one of the labels.
- Tickets about charges were called bugs.
### Rule or Guidance
Answer with exactly one label: bug, billing, account, feature_request or how_to.
### Complete New Template
```jinja
```
"""


def test_a_reply_ending_in_an_unclosed_fence_is_rejected_and_keeps_its_diagnosis() -> None:
    proposal = parse_reply(FIRST_TURN, truncated=False)
    assert proposal.text is None
    assert proposal.reason == "no fenced block: a block was opened but never closed"
    assert repairable(proposal.reason)
    assert "Tickets about charges were called bugs." in proposal.rationale


def test_the_repair_turn_that_wraps_the_whole_answer_is_rejected_as_scaffolding(tmp_path: Path) -> None:
    proposal = parse_reply(REPAIR_TURN, truncated=False)
    assert proposal.text is not None and proposal.text.startswith(SEED)
    # no prose before the block, but the diagnosis inside it is the rationale
    assert proposal.rationale.startswith("- The model answered with a sentence")
    make_workspace(tmp_path, {"prompts/system.j2": SEED})
    task = load_workspace(find_config(tmp_path)).tasks[0]
    reason = check_template(task, "prompts/system.j2", proposal.text, [])
    assert reason == "answer scaffolding in the template: line 2 is a heading of the answer (### Diagnosis)"
    assert repairable(reason)
    assert "no diagnosis, no headings of your answer" in repair_request(reason)


@pytest.mark.parametrize("line", ["### Diagnosis", "**Rule or Guidance**", "2. New template:",
                                  "## Complete New Template", "Improved template:", "```jinja", "```", "~~~"])
def test_answer_headings_and_fence_lines_are_scaffolding(line: str) -> None:
    assert scaffolding_problem(f"Classify the ticket.\n{line}\nAnswer with one label.", "Classify the ticket.")


@pytest.mark.parametrize("text", [
    "Classify the ticket.\n## Rules\n- Charges are billing.",          # a heading of the prompt's own
    "Return the fields.\n```json\n{\"label\": \"...\"}\n```",           # fences the original already has
    "Classify the ticket.\nDiagnosis codes are not labels.",           # the word, not a heading
])
def test_prompts_with_their_own_headings_or_fences_are_not_scaffolding(text: str) -> None:
    original = "Return the fields.\n```json\n{\"label\": \"...\"}\n```" if "json" in text else "Classify the ticket."
    assert scaffolding_problem(text, original) is None


def test_embedded_diagnosis_stops_at_the_next_heading() -> None:
    assert embedded_diagnosis("x\n**Diagnosis:**\nLabels missing.\n### Rule\nlist them") == "Labels missing."
    assert embedded_diagnosis("no headings here") == ""


def test_a_block_left_open_after_a_complete_one_is_ambiguous_and_rejected() -> None:
    reply = "Missing labels.\n```jinja\nClassify: bug or billing.\n```\nOr maybe:\n```jinja\nClassify it"
    proposal = parse_reply(reply, truncated=False)
    assert proposal.text is None
    assert proposal.reason == "no fenced block: a block opened after the template was never closed"


def test_a_template_written_out_three_times_is_kept_once() -> None:
    rule = "Please answer with exactly one of bug, billing, account, feature_request, or how_to."
    tripled = "\n\n".join([f"{SEED}\n{rule}"] * 3)
    assert drop_repeated_paragraphs(tripled, SEED) == f"{SEED}\n{rule}"
    # repeats the original itself has are the author's, and stay
    original = "Be brief.\n\nLabel it.\n\nBe brief."
    assert drop_repeated_paragraphs(original + "\n\nNew rule.", original) == original + "\n\nNew rule."
    assert drop_repeated_paragraphs("A\n\nB", "A") == "A\n\nB"


RULE = "Answer with exactly one of bug, billing, account, feature_request or how_to."


def test_a_stated_instruction_is_added_when_the_template_came_back_unchanged_or_missing() -> None:
    copied = f"Diagnosis: the labels are never named.\nNew instruction: \"{RULE}\"\n```jinja\n{SEED}\n```"
    proposal = with_new_instruction(parse_reply(copied, truncated=False), copied, SEED)
    assert proposal.text == f"{SEED}\n{RULE}" and proposal.reason is None
    assert proposal.rationale.startswith("Diagnosis: the labels are never named.")
    forgotten = f"Diagnosis: the labels are never named.\n**New instruction:** {RULE}\nNew template:\n{SEED}"
    assert with_new_instruction(parse_reply(forgotten, truncated=False), forgotten, SEED).text == f"{SEED}\n{RULE}"


@pytest.mark.parametrize("line", ["New instruction: <that rule as one sentence addressed to the model>",
                                  "New instruction: Mention {{ secret }} too.", "New instruction: ```",
                                  "New instruction: " + "x" * 500, "no such line"])
def test_an_unusable_instruction_changes_nothing(line: str) -> None:
    reply = f"Diagnosis: d.\n{line}\n```jinja\n{SEED}\n```"
    parsed = parse_reply(reply, truncated=False)
    assert with_new_instruction(parsed, reply, SEED) == parsed


def test_a_real_rewrite_is_never_touched() -> None:
    reply = f"Diagnosis: d.\nNew instruction: {RULE}\n```jinja\nClassify the ticket. {RULE}\n```"
    parsed = parse_reply(reply, truncated=False)
    assert with_new_instruction(parsed, reply, SEED) == parsed


def test_a_block_holding_the_whole_answer_is_cut_down_to_the_template_after_its_heading() -> None:
    block = (f"Diagnosis: the labels are never named.\n\nGeneral Rule: always answer with a label.\n\n"
             f"New Template:\n{SEED}\n{RULE}")
    proposal = strip_scaffolding(Proposal(block, "", None), SEED)
    assert proposal.text == f"{SEED}\n{RULE}"
    assert proposal.rationale.startswith("Diagnosis: the labels are never named.")
    # the template ends at the next heading of the answer
    assert strip_scaffolding(Proposal(f"New Template:\n{SEED}\n### Diagnosis\nmore", "", None), SEED).text == SEED
    # the recorded repair turn: nothing after its "Complete New Template" heading but a fence
    wrapped = parse_reply(REPAIR_TURN, truncated=False)
    assert strip_scaffolding(wrapped, SEED) == wrapped


# A repair-turn reply the bundled 1.5B wrote in this project's demo (seed 2, the cache of a real run): its whole
# answer inside the block, the template after a "New Template:" line, the rule only in the prose.
RECORDED_REPAIR = """\
```jinja
Diagnosis: The current template does not clearly state the rule that the model should follow to correctly \
identify customer support ticket categories. It only asks for the category without specifying what constitutes a \
bug, billing, account, feature_request, or how_to.

General Rule: The model should always answer with exactly one of the following labels: bug, billing, account, \
feature_request, or how_to based on the content of the customer's ticket.

New Template:
You are a helpful support assistant for Ledgerly. Read the customer's ticket and say what kind of request it is.
```
"""


def test_the_recorded_reply_is_cut_to_its_template_and_keeps_its_diagnosis() -> None:
    proposal = read_proposal(RECORDED_REPAIR, truncated=False, parent_text=SEED, original=SEED)
    # what it proposes is the parent unchanged (the engine rejects that as repairable), never the answer
    assert proposal.text == SEED and proposal.reason is None
    assert proposal.rationale.startswith("Diagnosis: The current template does not clearly state the rule")
    with_rule = RECORDED_REPAIR.replace("New Template:", f"New instruction: {RULE}\nNew Template:")
    assert read_proposal(with_rule, truncated=False, parent_text=SEED, original=SEED).text == f"{SEED}\n{RULE}"
