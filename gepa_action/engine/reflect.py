"""Reflection: show a module's template and what it did on a minibatch to the reflection model, and
turn its reply into a proposal that is safe to evaluate.

A proposal costs metric calls only after it has passed every cheap check here: the reply was not cut
off, it holds one complete fenced block, the block parses as Jinja, it uses exactly the variables of
the original template, and it renders for every minibatch instance in the sandbox. Each rejection
carries a reason (`kind: detail`) that goes to the audit log, the report and the next reflection
prompt for the same parent and module, so the model does not propose the same thing twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..evals import Instance
from ..guidance.prompt import prompt_section
from ..render.text import code_block
from ..templates import TemplateRenderError, render, syntax_problem, template_variables
from ..workspace import Task
from .state import Rejection, TraceRecord

#: How many earlier rejected proposals the prompt shows (the most recent ones).
SHOWN_REJECTIONS = 3
#: Longest text of one input, output or feedback shown per example; the rest is elided.
SHOWN_CHARS = 2000

SYSTEM_PROMPT = """\
You improve the prompt templates of a language-model task. You are shown one template, what the model \
produced with it on a few examples, and the feedback on each result. Work out why the failing examples \
failed, then write a better version of the template. Prefer general rules that would also hold for \
unseen inputs over notes about the specific examples; keep what already works."""

#: The closing request. No markdown headings (a small model copies them into its answer, and then into
#: the template), and the answer's shape shown rather than described: the bundled 1.5B, asked with a
#: numbered list under "## What to answer", echoed that heading and the template unchanged in 2 of 3 tries.
#: The "New instruction" line is the rule on its own: small models state it well and then often fail to
#: write it into a copy of the template, so `with_new_instruction` can add it for them.
INSTRUCTIONS = """\
Now write your answer in exactly this shape, with no headings and nothing after the block:

Diagnosis: <one to four sentences: why the failing examples failed, and what the model must be told to get \
them right>
New instruction: <the sentence to add to the template, written to the model in the imperative ("Answer \
...", "When ..."): a rule that also holds for inputs not shown here>
```jinja
<the complete new template: the current template with the new instruction added>
```

The block holds only the template, because the model will read it word for word. The new template must \
differ from the current one: a copy is rejected. {variables_rule} Do not use other variables."""


@dataclass(frozen=True)
class Example:
    """One minibatch instance as the reflection model sees it."""

    instance: Instance
    trace: TraceRecord
    step_names: tuple[str, ...]


@dataclass(frozen=True)
class Proposal:
    """The parsed reply: `text` is None when the proposal was rejected, with `reason` saying why."""

    text: str | None
    rationale: str
    reason: str | None


def _clip(text: str, limit: int = SHOWN_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} more characters]"


def _format_inputs(inputs: dict[str, Any]) -> str:
    return "\n".join(f"{name}: {value}" for name, value in inputs.items())


def build_messages(task: Task, module: str, texts: Mapping[str, str], examples: Sequence[Example],
                   rejected: Sequence[Rejection]) -> list[dict[str, str]]:
    """The reflection request for `module`, given the parent's text of every module (`texts`).

    The current template is the first fenced block of the user message; the task's other templates
    follow it, for context (a system prompt is only half the story without the user message it pairs
    with)."""
    text = texts[module]
    variables = sorted(template_variables(task.templates[module].source))
    if variables:
        listed = ", ".join("{{ " + v + " }}" for v in variables)
        variables_rule = f"It must use exactly these variables, each at least once: {listed}."
    else:
        variables_rule = "It uses no variables and must not add any."
    roles = sorted({role for step in task.steps for role, m in step.messages if m == module})
    parts = [f"## The task\n{task.description or task.name}"]
    parts.append(f"## The template to improve: {module}\nIt is rendered as the {' and '.join(roles)} message "
                 f"of each call to the model.\n" + code_block(text, "jinja"))
    others = [m for m in task.modules if m != module]
    if others:
        context = ["## The task's other templates (context only; they are not changed now)"]
        for other in dict.fromkeys(others):
            where = ", ".join(f"{role} message of step {step.name}" for step in task.steps
                              for role, m in step.messages if m == other)
            context += [f"{other} ({where}):", code_block(texts[other], "jinja")]
        parts.append("\n".join(context))
    parts.append(f"## Examples ({len(examples)})")
    for number, ex in enumerate(examples, 1):
        lines = [f"### Example {number}: score {ex.trace.score:g}", "Inputs:",
                 code_block(_clip(_format_inputs(ex.instance.inputs)))]
        if len(ex.step_names) > 1:
            for name, out in zip(ex.step_names, ex.trace.step_outputs, strict=False):
                lines += [f"Output of step {name}:", code_block(_clip(out))]
        else:
            lines += ["Model output:", code_block(_clip(ex.trace.output))]
        lines += ["Feedback:", code_block(_clip(ex.trace.feedback))]
        parts.append("\n".join(lines))
    if rejected:
        shown = list(rejected)[-SHOWN_REJECTIONS:]
        lines = ["## Proposals already rejected for this template (do not repeat them)"]
        for number, rej in enumerate(shown, 1):
            lines += [f"{number}. Rejected because: {rej.reason}", code_block(_clip(rej.text))]
        parts.append("\n".join(lines))
    if task.guidance.items:
        parts.append(prompt_section(task.guidance.items))
    parts.append(INSTRUCTIONS.format(variables_rule=variables_rule))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


_OPEN = re.compile(r"^(?P<fence>`{3,}|~{3,})[ \t]*[\w.+-]*[ \t]*$")
# Small models often open the block at the end of their sentence ("Here it is: ```jinja") or close it
# at the end of the template's last line; both are read as fences (prose before / text before them).
_OPEN_AFTER_PROSE = re.compile(r"^(?P<prose>[^`~]*\S)[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*[\w.+-]*[ \t]*$")
_CLOSE_AFTER_TEXT = re.compile(r"^(?P<text>.*?[^`~\s].*?)[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*$")


def _opening(line: str) -> str | None:
    """The fence a line opens with (alone on the line, or after prose), or None."""
    stripped = line.strip()
    match = _OPEN.match(stripped) or _OPEN_AFTER_PROSE.match(stripped)
    return match.group("fence") if match else None


def _closing(line: str, fence: str) -> tuple[bool, str | None]:
    """Whether `line` closes a block opened with `fence`, and the template text before the fence on it."""
    stripped = line.strip()
    if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
        return True, None
    match = _CLOSE_AFTER_TEXT.match(line.rstrip())
    if match and match.group("fence")[0] == fence[0] and len(match.group("fence")) >= len(fence):
        return True, match.group("text")
    return False, None


def fenced_blocks(reply: str) -> tuple[list[tuple[int, int, str]], bool]:
    """Complete fenced blocks as (first line, last line, content), and whether a block was left open."""
    lines = reply.splitlines()
    blocks: list[tuple[int, int, str]] = []
    index = 0
    while index < len(lines):
        fence = _opening(lines[index])
        if fence is None:
            index += 1
            continue
        for close in range(index + 1, len(lines)):
            closes, tail = _closing(lines[close], fence)
            if closes:
                content = lines[index + 1:close] + ([tail] if tail is not None else [])
                blocks.append((index, close, "\n".join(content)))
                index = close + 1
                break
        else:
            return blocks, True
    return blocks, False


#: A line that heads a part of the *answer* the reflection prompt asks for (the diagnosis, the rule, the
#: new template), as small models write them: "### Diagnosis", "**Rule or Guidance**", "2. New template:".
_ANSWER_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s*|\*\*\s*|\d+[.)]\s*)*(?P<name>diagnosis|analysis|(?:the\s+)?rules?\s+or\s+guidance"
    r"|(?:the\s+)?(?:complete\s+|full\s+)?(?:new|improved|updated|revised)\s+(?:version\s+of\s+the\s+)?template)"
    r"\b\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*$", re.IGNORECASE)
_ANY_HEADING = re.compile(r"^\s*(?:#{1,6}\s+\S|\*\*[^*]+\*\*\s*:?\s*$)")
_FENCE_LINE = re.compile(r"^\s*(?:`{3,}|~{3,})[ \t]*[\w.+-]*[ \t]*$")


def embedded_diagnosis(text: str) -> str:
    """The text under a "Diagnosis"/"Analysis" heading inside `text`, up to the next answer heading or fence.

    A small model sometimes puts its whole answer inside the block; its diagnosis is still the proposal's
    rationale, which must not be lost (an empty rationale in the lineage explains nothing to a reviewer)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = _ANSWER_HEADING.match(line)
        if match and match.group("name").lower() in ("diagnosis", "analysis"):
            body = []
            for following in lines[index + 1:]:
                if _ANSWER_HEADING.match(following) or _FENCE_LINE.match(following) or _ANY_HEADING.match(following):
                    break
                body.append(following)
            return "\n".join(body).strip()
    return ""


def parse_reply(reply: str, *, truncated: bool) -> Proposal:
    """Split a reply into rationale and template; the last complete fenced block is the template.

    A block opened after the last complete one and never closed makes the reply ambiguous (was the open
    one meant as the template?), so it is rejected rather than guessed at."""
    blocks, left_open = fenced_blocks(reply)
    lines = reply.splitlines()
    before = lines[: blocks[-1][0]] if blocks else lines
    if blocks and (prose := _OPEN_AFTER_PROSE.match(lines[blocks[-1][0]].strip())):
        before = [*before, prose.group("prose")]  # the sentence the fence was opened after
    rationale = "\n".join(before).strip()
    if blocks and not rationale:
        rationale = embedded_diagnosis(blocks[-1][2])
    if truncated:
        return Proposal(None, rationale, "cut off: the reply hit max_tokens (finish_reason length)")
    if not blocks or left_open:
        detail = ("a block was opened but never closed" if not blocks else
                  "a block opened after the template was never closed") if left_open else "the reply has no ``` block"
        return Proposal(None, rationale, f"no fenced block: {detail}")
    text = blocks[-1][2].strip("\n")
    if not text.strip():
        return Proposal(None, rationale, "empty template: the fenced block is empty")
    return Proposal(text, rationale, None)


_NEW_INSTRUCTION = re.compile(r"^\s*(?:\*\*)?new instruction(?:\*\*)?\s*:\s*(?:\*\*)?\s*(?P<rule>.+?)\s*$",
                              re.IGNORECASE | re.MULTILINE)
#: The longest stated rule that is added to a template on the model's behalf.
MAX_INSTRUCTION_CHARS = 400


def stated_instruction(reply: str) -> str | None:
    """The rule the reply states on its "New instruction:" line, if it is usable as a line of a prompt:
    one sentence of plain text (no Jinja, no fence, not the prompt's own placeholder)."""
    match = _NEW_INSTRUCTION.search(reply)
    if match is None:
        return None
    rule = match.group("rule").strip().strip("*").strip()
    if len(rule) >= 2 and rule[0] == rule[-1] and rule[0] in "\"'":
        rule = rule[1:-1].strip()
    if (not rule or len(rule) > MAX_INSTRUCTION_CHARS or rule.startswith("<") or "`" in rule
            or any(mark in rule for mark in ("{{", "{%", "{#", "%}", "}}", "#}"))):
        return None
    return rule


def with_new_instruction(proposal: Proposal, reply: str, parent_text: str) -> Proposal:
    """Repair a reply whose template is missing or a copy of the parent's while its "New instruction:" line
    states a rule: the proposal becomes the parent's template with that rule as a new last line.

    The bundled 1.5B reflection model diagnoses well and states the rule, then copies the template without
    it (or forgets the block); the rule is what it meant to add, so adding it is the model's proposal, not
    the tool's. Anything else (a rewrite, a rejection for another reason) is left as it is."""
    unchanged = proposal.text is not None and proposal.text.strip() == parent_text.strip()
    missing = proposal.text is None and (proposal.reason or "").startswith("no fenced block")
    if not (unchanged or missing):
        return proposal
    rule = stated_instruction(reply)
    if rule is None or rule in parent_text:
        return proposal
    return Proposal(parent_text.rstrip("\n") + "\n" + rule, proposal.rationale, None)


def strip_scaffolding(proposal: Proposal, original: str) -> Proposal:
    """Repair a template that holds the whole answer (diagnosis, rule, "New template:" heading, template):
    keep what follows the last "new template" heading, up to the next heading or fence line, as the
    template, and what precedes it as the rationale. Kept only if that part is free of scaffolding itself;
    otherwise the proposal stays as it was, to be rejected with its reason."""
    if proposal.text is None or scaffolding_problem(proposal.text, original) is None:
        return proposal
    lines = proposal.text.splitlines()
    heads = [i for i, line in enumerate(lines)
             if (m := _ANSWER_HEADING.match(line)) and "template" in m.group("name").lower()]
    if not heads:
        return proposal
    body: list[str] = []
    for line in lines[heads[-1] + 1:]:
        if _FENCE_LINE.match(line) or _ANSWER_HEADING.match(line):
            break
        body.append(line)
    text = "\n".join(body).strip("\n")
    if not text.strip() or scaffolding_problem(text, original) is not None:
        return proposal
    before = "\n".join(lines[: heads[-1]]).strip()
    return Proposal(text, proposal.rationale or before, None)


def drop_repeated_paragraphs(text: str, original: str) -> str:
    """`text` without paragraphs that repeat an earlier one word for word (the original's own repeats stay).

    A small model asked to add a rule to the template sometimes writes the template plus the rule two or
    three times over. The copies add nothing a reviewer should have to read, so the proposal is repaired
    rather than rejected: the first occurrence of each paragraph stays, in place."""
    def key(paragraph: str) -> str:
        return " ".join(paragraph.split())

    allowed: dict[str, int] = {}
    for paragraph in re.split(r"\n[ \t]*\n", original):
        allowed[key(paragraph)] = allowed.get(key(paragraph), 0) + 1
    kept: list[str] = []
    seen: dict[str, int] = {}
    for paragraph in re.split(r"\n[ \t]*\n", text):
        k = key(paragraph)
        seen[k] = seen.get(k, 0) + 1
        if k and seen[k] > max(1, allowed.get(k, 0)):
            continue
        kept.append(paragraph)
    return "\n\n".join(kept) if len(kept) < len(re.split(r"\n[ \t]*\n", text)) else text


def read_proposal(reply: str, *, truncated: bool, parent_text: str, original: str) -> Proposal:
    """A reflection reply as a proposal, with the repairs a small model's answer needs applied in order:
    a block holding the whole answer cut to its template, its stated rule added to an unchanged or
    unfenced template, and word-for-word repeated paragraphs kept once. `original` is the repository's template
    (whose own headings, fences and repeats are never treated as scaffolding)."""
    proposal = parse_reply(reply, truncated=truncated)
    if proposal.text is not None:
        proposal = strip_scaffolding(proposal, original)
    proposal = with_new_instruction(proposal, reply, parent_text)  # after the cut: it may leave the parent's text
    if proposal.text is None:
        return proposal
    return Proposal(drop_repeated_paragraphs(proposal.text, original), proposal.rationale, proposal.reason)


def scaffolding_problem(text: str, original: str) -> str | None:
    """Why `text` looks like the reflection *answer* rather than a prompt: it holds a fence line or a
    heading of the requested answer format (diagnosis, rule, new template) that the original lacks.

    Such a proposal would send the model's own notes to the task model as instructions; lines the
    original template already has (a prompt that itself asks for a ```json block) are fine."""
    known = {line.strip() for line in original.splitlines()}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() in known:
            continue
        if _FENCE_LINE.match(line):
            return f"answer scaffolding in the template: line {number} is a fence ({line.strip()[:20]})"
        if _ANSWER_HEADING.match(line):
            return f"answer scaffolding in the template: line {number} is a heading of the answer ({line.strip()[:40]})"
    return None


#: Rejections the model can fix when told why (a reply cut off at max_tokens is not: it needs more room;
#: a repeat of a proposal already tried is not either: shown the same evidence, the model tends to land on
#: the same template again, and the turn's latency sits on the round's critical path).
REPAIRABLE = ("unchanged", "changes variables", "no fenced block", "empty template", "not valid Jinja",
              "does not render", "answer scaffolding")


def repairable(reason: str) -> bool:
    return reason.startswith(REPAIRABLE)


def repair_request(reason: str) -> str:
    """The follow-up turn after an unusable reply: the reason, a concrete way out, and the format again.

    Small models that copy the template while describing a fix in prose (the bundled 1.5B does, most of
    the time) do write the rule down when asked to append their own diagnosis to the template."""
    if reason.startswith("unchanged"):
        fix = (" Copy the current template and add, on new lines after it, the rules from your diagnosis, "
               "written as plain instructions to the model (for example: \"Requests about X are Y.\").")
    elif reason.startswith("answer scaffolding"):
        fix = (" The block must hold only the prompt the model will read: no diagnosis, no headings of your "
               "answer, no ``` lines inside it. Write the diagnosis before the block.")
    elif reason.startswith("changes variables"):
        fix = (" Use only the variables the instructions allow; write what you wanted to add as plain "
               "instructions instead.")
    elif reason.startswith("no fenced block"):
        fix = " Put the new template you wrote inside the block; keep your diagnosis before it."
    else:
        fix = ""
    return (f"That template was rejected: {reason}.{fix} Write the complete new template now, as one fenced "
            "block: a line with only ```jinja, the template, and a line with only ```.")


def check_template(task: Task, module: str, text: str, examples: Sequence[Example]) -> str | None:
    """Why `text` cannot replace `module` (None when it can): answer scaffolding, syntax, variables, rendering."""
    scaffolding = scaffolding_problem(text, task.templates[module].source)
    if scaffolding is not None:
        return scaffolding
    problem = syntax_problem(text)
    if problem is not None:
        message, line = problem
        where = f" (line {line})" if line else ""
        return f"not valid Jinja: {message}{where}"
    original = template_variables(task.templates[module].source)
    new = template_variables(text)
    if new != original:
        changes = []
        if new - original:
            changes.append("adds " + ", ".join(sorted(new - original)))
        if original - new:
            changes.append("drops " + ", ".join(sorted(original - new)))
        return "changes variables: " + "; ".join(changes)
    for ex in examples:
        variables: dict[str, Any] = dict(ex.instance.inputs)
        for index, step in enumerate(task.steps):
            if any(m == module for _, m in step.messages):
                try:
                    render(text, variables)
                except TemplateRenderError as exc:
                    return f"does not render: instance {ex.instance.id}: {exc}"
            if step.output and index < len(ex.trace.step_outputs):
                variables[step.output] = ex.trace.step_outputs[index]
    return None
