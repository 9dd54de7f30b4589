"""`gepa_action.templates` on its own: the variables a template reads, how a bad template is reported
(file, line, fix), and what rendering refuses.

The sandbox's size and time bounds are tested in test_sandbox_bounds.py and the engine's check of a
proposed rewrite in test_engine_parts.py; this file covers what a user writing templates meets first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.workspace_factory import make_workspace

from gepa_action.cli import main
from gepa_action.errors import InputError
from gepa_action.templates import (
    MAX_TEMPLATE_BYTES,
    TemplateRenderError,
    load_template,
    parse_template,
    render,
    syntax_problem,
    template_variables,
)

# -- the variables a template reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Ticket: {{ text }}", {"text"}),
        ("{{ a }} and {{ b | upper }} and {{ a }}", {"a", "b"}),
        ("{{ doc.title }} / {{ doc['body'] }}", {"doc"}),  # attributes and keys belong to their object
        ("{% if urgent %}URGENT {% endif %}{{ text }}", {"urgent", "text"}),
        ("{% for item in items %}{{ item }} of {{ total }}{% endfor %}", {"items", "total"}),  # `item` is local
        ("{% set greeting = 'hi' %}{{ greeting }} {{ name }}", {"name"}),  # assigned in the template
        ("{{ text | truncate(limit) }}", {"text", "limit"}),  # a filter's argument is read too
        ("{% for i in range(n) %}{{ i }}{% endfor %}", {"n"}),  # Jinja's globals are not inputs
        ("{% set ns = namespace(k=0) %}{{ ns.k }}{{ dict(a=b) }}", {"b"}),
        ("No variables at all.", set()),
        ("{# {{ hidden }} is a comment #}{{ shown }}", {"shown"}),
    ],
)
def test_the_variables_a_template_reads(source: str, expected: set[str]) -> None:
    assert template_variables(source) == expected
    assert parse_template(source, "prompts/user.j2").variables == expected


def test_a_rewrite_that_keeps_its_variables_has_the_same_set_and_one_that_drops_one_does_not() -> None:
    """The engine compares these sets to refuse a proposal that would lose an input: wording, order and
    repetition may change, the set of variables may not."""
    seed = "Classify: {{ text }} (customer: {{ customer.name }})"
    reworded = "Customer {{ customer.name }} wrote:\n{{ text }}\n{{ text }}\nAnswer with one label."
    dropped = "Classify: {{ text }}"
    renamed = "Classify: {{ ticket }} (customer: {{ customer.name }})"
    assert template_variables(reworded) == template_variables(seed)
    assert template_variables(seed) - template_variables(dropped) == {"customer"}
    assert template_variables(renamed) ^ template_variables(seed) == {"text", "ticket"}


# -- a template that cannot be used is one line: file, line, what is wrong, how to fix it ---------------


@pytest.mark.parametrize(
    ("source", "line", "needle"),
    [
        ("Line one\nLine two {{ text | }}\nLine three", 2, "template syntax error"),
        ("{% if x %}\nopen\n", 2, "template syntax error"),  # the block never ends: Jinja points at the end
        ("ok\n\n{% endfor %}", 3, "template syntax error"),
        ("intro\n{% include 'other.j2' %}", 2, "{% include %} is not supported"),
        ("{% extends 'base.j2' %}", 1, "{% extends %} is not supported"),
        ("a\nb\n{% import 'macros.j2' as m %}", 3, "{% import %} is not supported"),
        ("{{ text }}\n{{ text.__class__ }}", 2, "'__class__' is blocked by the template sandbox"),
        ("{{ x['__globals__'] }}", 1, "'__globals__' is blocked by the template sandbox"),
    ],
)
def test_a_template_that_cannot_be_used_names_the_file_and_line(source: str, line: int, needle: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_template(source, "prompts/user.j2")
    message = str(caught.value)
    assert message.startswith(f"prompts/user.j2:{line}: ")
    assert needle in message
    assert "\n" not in message, "one line, so CI annotations and terminals show all of it"
    assert caught.value.hint, "every refusal says how to fix it"


DEEP_CHAIN = "{{ ticket" + ".text" * 2000 + " }}"  # parses flat, but every walk of the tree recurses per link
TWO_BLOCKS = "{% block body %}a{% endblock %}\n{% block body %}b{% endblock %}"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (DEEP_CHAIN, ("the template is nested too deeply", None)),
        (TWO_BLOCKS, ("block 'body' defined twice", 2)),
    ],
    ids=["deep-attribute-chain", "block-defined-twice"],
)
def test_a_template_jinja_parses_but_cannot_compile_is_a_problem_not_a_crash(
        source: str, problem: tuple[str, int | None]) -> None:
    """The engine checks a reflection model's proposal with `syntax_problem`: it must answer, not raise
    (a RecursionError or TemplateAssertionError there used to escape the check)."""
    assert syntax_problem(source) == problem
    with pytest.raises(InputError) as caught:
        parse_template(source, "prompts/user.j2")
    assert problem[0] in str(caught.value) and "\n" not in str(caught.value)


def test_check_reports_a_block_defined_twice_as_one_line_exit_2(tmp_path: Path) -> None:
    make_workspace(tmp_path, {"prompts/user.j2": "Ticket: {{ text }}\n" + TWO_BLOCKS})
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "check"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: prompts/user.j2:3: template syntax error: "
                                                             "block 'body' defined twice")


def test_an_underscore_key_is_not_mistaken_for_a_sandbox_escape() -> None:
    """`doc._id` may be an input's key (Mongo-style ids): only dunder names are refused up front."""
    template = parse_template("{{ doc._id }} {{ doc['_rev'] }}", "prompts/user.j2")
    assert template.variables == {"doc"}
    assert render(template.source, {"doc": {"_id": 7, "_rev": "b"}}) == "7 b"


def test_load_template_refuses_empty_missing_huge_and_non_utf8_files(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    cases = {
        "empty.j2": (b"  \n\n", "template is empty"),
        "huge.j2": (b"x" * (MAX_TEMPLATE_BYTES + 1), "prompts/huge.j2"),
        "latin1.j2": ("ok\nCaf\xe9 {{ text }}".encode("latin-1"), "prompts/latin1.j2:2: not UTF-8"),
    }
    for name, (data, needle) in cases.items():
        (prompts / name).write_bytes(data)
        with pytest.raises(InputError) as caught:
            load_template(prompts / name, f"prompts/{name}", tmp_path)
        assert needle in str(caught.value), (name, str(caught.value))
    with pytest.raises(InputError, match=r"prompts/gone\.j2.*create it or fix the path in gepa\.yaml"):
        load_template(prompts / "gone.j2", "prompts/gone.j2", tmp_path)


def test_load_template_keeps_a_byte_order_mark_and_crlf_out_of_the_prompt(tmp_path: Path) -> None:
    path = tmp_path / "user.j2"
    path.write_bytes(b"\xef\xbb\xbfTicket:\r\n{{ text }}\r\n")
    template = load_template(path, "user.j2", tmp_path)
    assert template.source == "Ticket:\n{{ text }}\n"
    assert render(template.source, {"text": "hi"}) == "Ticket:\nhi"


def test_load_template_refuses_a_symlink_that_leads_out_of_the_workspace(tmp_path: Path) -> None:
    """A template is read from the user's repository; a link to a file elsewhere (a secret, say) must not
    end up in a prompt sent to a model."""
    outside = tmp_path / "outside.txt"
    outside.write_text("API_KEY=sk-not-for-prompts", encoding="utf-8")
    root = tmp_path / "ws"
    (root / "prompts").mkdir(parents=True)
    os.symlink(outside, root / "prompts" / "user.j2")
    with pytest.raises(InputError) as caught:
        load_template(root / "prompts" / "user.j2", "prompts/user.j2", root)
    assert "prompts/user.j2" in str(caught.value)
    assert "sk-not-for-prompts" not in str(caught.value)


def test_a_syntax_error_in_a_loaded_file_gives_the_line_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "system.j2"
    path.write_text("You are a triage bot.\n\nRules:\n{% for r in rules %}\n- {{ r }\n{% endfor %}\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_template(path, "prompts/system.j2", tmp_path)
    assert str(caught.value).startswith("prompts/system.j2:5: template syntax error")


# -- rendering -------------------------------------------------------------------------------------------


def test_a_missing_variable_is_an_error_never_an_empty_string() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render("Ticket: {{ text }} from {{ customer }}", {"text": "hi"})
    assert caught.value.kind == "missing"
    assert caught.value.variable == "customer"
    assert "inputs" in caught.value.hint


def test_a_missing_key_of_an_input_names_the_key() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render("{{ doc.title }}", {"doc": {"body": "b"}})
    assert (caught.value.kind, caught.value.variable) == ("attribute", "title")


def test_an_undefined_variable_in_an_untaken_branch_is_fine() -> None:
    """Optional inputs are written with `if`: only what is rendered must exist."""
    source = "{{ text }}{% if notes is defined %} ({{ notes }}){% endif %}"
    assert render(source, {"text": "a"}) == "a"
    assert render(source, {"text": "a", "notes": "n"}) == "a (n)"


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{{ items.append(4) }}", "sandbox"),  # would change the instance's inputs for the next render
        ("{{ doc.update({'x': 1}) }}", "sandbox"),
        ("{{ ''.__class__ }}", "sandbox"),  # refused by render itself, not only by the parse check
        ("{{ doc._private_method() }}", "attribute"),  # a dict's `_x` is a key lookup, and there is none
    ],
)
def test_the_sandbox_refuses_to_change_inputs_or_reach_python_internals(source: str, kind: str) -> None:
    inputs = {"items": [1, 2, 3], "doc": {"a": 1}}
    with pytest.raises(TemplateRenderError) as caught:
        render(source, inputs)
    assert caught.value.kind == kind
    assert inputs == {"items": [1, 2, 3], "doc": {"a": 1}}


def test_render_trims_the_outer_whitespace_and_block_lines() -> None:
    source = "\n  {% if a %}\nA\n  {% endif %}\n{{ b }}\n\n"
    assert render(source, {"a": True, "b": "B"}) == "A\nB"


def test_text_from_inputs_is_never_evaluated_as_a_template() -> None:
    """An eval instance holding Jinja syntax (a ticket quoting a template) is data, not code."""
    quoted = "{{ 7 * 7 }} {% for x in y %}"
    assert render("Ticket: {{ text }}", {"text": quoted}) == f"Ticket: {quoted}"


def test_nan_and_huge_numbers_in_inputs_render_as_text() -> None:
    assert render("{{ a }} {{ b }}", {"a": float("nan"), "b": 10**30}) == "nan 1000000000000000000000000000000"
