"""The bounded template sandbox: time, size and number limits, for repository templates and proposals alike."""

from __future__ import annotations

import threading
import time

import pytest

from gepa_action.templates import MAX_OUTPUT_CHARS, TemplateRenderError, render, syntax_problem

LONG = "x" * 300
FOUR_LOOPS = ("{% for a in s %}{% for b in s %}{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}"
              "{% endfor %}{% endfor %}")


def kind_of(source: str, **variables: object) -> str:
    with pytest.raises(TemplateRenderError) as info:
        render(source, variables)
    return info.value.kind


def test_an_endless_render_stops_at_the_time_limit_and_the_thread_goes_on() -> None:
    start = time.monotonic()
    with pytest.raises(TemplateRenderError, match="took longer than 0.3 s") as info:
        render(FOUR_LOOPS, {"s": LONG}, seconds=0.3)
    assert info.value.kind == "limit"
    assert time.monotonic() - start < 2
    assert render("Hello {{ name }}", {"name": "you"}) == "Hello you"
    time.sleep(0.05)  # a late timeout must not land after the render returned


def test_many_renders_near_their_deadline_never_leak_a_timeout() -> None:
    """Renders that finish just before or after a tiny deadline either return or raise TemplateRenderError;
    no exception escapes into the code that runs after them."""
    outcomes = {"ok": 0, "timeout": 0}
    for i in range(400):
        try:
            render("{% for a in s %}{{ a }}{% endfor %}", {"s": "y" * (i % 50 * 40)}, seconds=0.0005)
            outcomes["ok"] += 1
        except TemplateRenderError:
            outcomes["timeout"] += 1
        sum(range(2000))  # bytecodes where a stray asynchronous exception would surface
    time.sleep(0.05)
    assert outcomes["ok"] + outcomes["timeout"] == 400


def test_only_the_slow_render_of_several_threads_times_out() -> None:
    results: dict[str, str] = {}

    def run(name: str, source: str) -> None:
        try:
            render(source, {"s": LONG}, seconds=0.5)
            results[name] = "ok"
        except TemplateRenderError as exc:
            results[name] = exc.kind

    threads = [threading.Thread(target=run, args=("slow", FOUR_LOOPS))]
    threads += [threading.Thread(target=run, args=(f"fast{i}", "{{ s|length }}")) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {"slow": "limit", "fast0": "ok", "fast1": "ok", "fast2": "ok"}


@pytest.mark.parametrize("source", [
    "{{ 'A' * 400000000 }}",
    "{{ 400000000 * 'A' }}",
    "{{ [1] * 100000000 }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ 10 ** 10000000 }}",
    "{{ s|center(1000000000) }}",
    "{{ s.rjust(1000000000) }}",
    "{{ '{:>999999999}'.format(s) }}",
    "{{ '%999999999s' % s }}",
    "{{ '%*s' % (999999999, s) }}",
    "{% set ns = namespace(t=s) %}{% for i in range(40) %}{% set ns.t = ns.t ~ ns.t %}{% endfor %}",
    "{% set ns = namespace(t=s) %}{% for i in range(40) %}{% set ns.t = ns.t + ns.t %}{% endfor %}",
    "{{ (s * 100)|replace('x', s * 100)|replace('x', s) }}",
    "{{ lipsum(100000000) }}",
    "{{ range(100000)|join(s) }}",
    "{{ '%(a)999999999s' % {'a': s} }}",
    "{{ '%.999999999f' % 1 }}",
    "{{ '{:.999999999f}'.format(1) }}",
    "{{ '{0:{1}}'.format(s, 999999999) }}",
    "{% for i in range(100000) %}{{ s }}{% endfor %}",
])
def test_size_bombs_stop_before_they_allocate(source: str) -> None:
    start = time.monotonic()
    assert kind_of(source, s=LONG) == "limit"
    assert time.monotonic() - start < 1.5, "refused by a bound, not by the clock"


def test_a_prompt_just_under_the_output_limit_renders() -> None:
    text = render("{{ s * n }}", {"s": "a", "n": MAX_OUTPUT_CHARS - 10})
    assert len(text) == MAX_OUTPUT_CHARS - 10


@pytest.mark.parametrize(("source", "kind"), [
    ("{{ nope }}", "missing"),
    ("{{ d.nope }}", "attribute"),
    ("{{ s|attr('__class__') }}", "sandbox"),
    ("{{ 1 / 0 }}", "error"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "limit"),
])
def test_each_failure_has_its_own_kind_and_hint(source: str, kind: str) -> None:
    with pytest.raises(TemplateRenderError) as info:
        render(source, {"s": "x", "d": {}})
    assert info.value.kind == kind
    hints = {"missing": "under inputs", "attribute": "have that key", "sandbox": "Python internals",
             "error": "expression at fault", "limit": "keep loops and repeats small"}
    assert hints[kind] in info.value.hint


@pytest.mark.parametrize(("source", "problem"), [
    ("{% include 'x.j2' %}", "{% include %} is not supported"),
    ("{% extends 'x.j2' %}", "{% extends %} is not supported"),
    ("{% from 'x.j2' import y %}", "{% import %} is not supported"),
    ("{{ x.__class__ }}", "'__class__' is blocked"),
    ("{{ x['__class__'] }}", "'__class__' is blocked"),
    ("{{ self._TemplateReference__context }}", "'_TemplateReference__context' is blocked"),
])
def test_what_can_never_render_is_refused_without_rendering(source: str, problem: str) -> None:
    found = syntax_problem(source)
    assert found is not None and problem in found[0]


def test_ordinary_templates_still_render() -> None:
    source = ("{% set labels = ['bug', 'billing'] %}{% for l in labels %}- {{ l|upper }}\n{% endfor %}"
              "{{ '%-8s|' % name }}{{ '{:>5}'.format(n) }} {{ (name ~ '!') * 3 }} {{ items|join(', ') }}"
              "{{ cycler('a', 'b').next() }}{{ 2 ** 10 }}")
    out = render(source, {"name": "ann", "n": 42, "items": ["x", "y"]})
    assert out == "- BUG\n- BILLING\nann     |   42 ann!ann!ann! x, ya1024"


def test_a_render_cannot_change_the_inputs_of_the_next_one() -> None:
    inputs = {"items": ["a"], "meta": {"k": "v"}}
    for source in ("{{ items.append(items) }}", "{{ meta.update(k='x') }}", "{{ items.pop() }}"):
        with pytest.raises(TemplateRenderError) as info:
            render(source, inputs)
        assert info.value.kind == "sandbox"
    assert inputs == {"items": ["a"], "meta": {"k": "v"}}


def test_check_refuses_a_template_that_is_slow_on_every_instance(tmp_path, monkeypatch) -> None:
    """Each render stays under the time limit, but all of them together would stall `check`."""
    from fakes.workspace_factory import make_workspace

    from gepa_action import workspace as workspace_module
    from gepa_action.errors import InputError

    monkeypatch.setattr(workspace_module, "SLOW_RENDER_TOTAL", 0.3)
    rows = [{"id": f"r{i}", "inputs": {"text": "y" * 700}, "expected": "bug"} for i in range(200)]
    root = make_workspace(tmp_path, {"prompts/user.j2": "{% for a in text %}{% for b in text %}{% endfor %}"
                                                         "{% endfor %}{{ text }}"}, instances=rows)
    start = time.monotonic()
    with pytest.raises(InputError, match=r"prompts/user\.j2: rendering it for the first \d+ instances"):
        workspace_module.load_workspace(workspace_module.find_config(root))
    assert time.monotonic() - start < 5


def test_keys_starting_with_an_underscore_stay_usable() -> None:
    assert syntax_problem("{{ doc._id }} {{ doc['_rev'] }}") is None
    assert render("{{ doc._id }} {{ doc['_rev'] }}", {"doc": {"_id": "a1", "_rev": "2"}}) == "a1 2"
    with pytest.raises(TemplateRenderError) as info:
        render("{{ text._private }}", {"text": "x"})  # an object's private attribute: the sandbox says no
    assert info.value.kind in ("sandbox", "attribute")


@pytest.mark.parametrize(("source", "expected"), [
    ("{{ '{:,}'.format(n) }}", "25,000,000"),
    ("{{ '%d items' % n }}", "25000000 items"),
    ("{{ x|default(10000000) }}", "10000000"),
    ("{{ {'k': 1}.get('z', n) }}", "25000000"),
    ("{{ n * 3 }}", "75000000"),
])
def test_large_numbers_as_data_are_not_limits(source: str, expected: str) -> None:
    assert render(source, {"n": 25_000_000}) == expected
