"""The typed report: report.json written by the engine reads back equal, renders the same as before the
model existed, and anything that is not a compatible report.json is refused with one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import rule_task
from fakes.openai_server import FakeOpenAI
from fakes.report_factory import REPORTS, real_report

from gepa_action.cli import main
from gepa_action.errors import InputError
from gepa_action.render.pr_body import render_job_summary, render_pr_body
from gepa_action.render.report_md import render_report
from gepa_action.render.terminal import render_summary_line
from gepa_action.report.model import SCHEMA_VERSION, Report, dumps, load, loads
from gepa_action.workspace import find_config, load_workspace

THRESHOLD = "test gain with its 95% CI low bound above 0"  # as in tests/data/reports/README.md
FIXTURES = ("route_v1", "two_modules_v1")


def renderings(report: Report) -> dict[str, str]:
    """Every rendering of a report, keyed like the fixture files of tests/data/reports."""
    tasks = report.tasks
    names = [t.task for t in tasks]
    return {
        "report.md": render_report(report),
        "pr_body.md": render_pr_body(report, applied=names, threshold=THRESHOLD,
                                     run_url="https://github.com/o/r/actions/runs/1",
                                     full_report="https://github.com/o/r/blob/b/.gepa-tune/report.md").text,
        "pr_body_small.md": render_pr_body(report, applied=names, threshold=THRESHOLD, limit=3000).text,
        "job_summary.md": render_job_summary(report, applied=[], threshold=THRESHOLD, operation="none",
                                             pr_url=None),
        "summary_line.txt": "\n".join(render_summary_line(t) for t in tasks) + "\n",
    }


@pytest.mark.parametrize("name", FIXTURES)
def test_a_report_json_from_before_schema_version_renders_as_it_did(name: str) -> None:
    path = REPORTS / f"{name}.report.json"
    assert "schema_version" not in json.loads(path.read_text(encoding="utf-8"))
    report = load(path)
    assert report.schema_version == SCHEMA_VERSION
    for kind, text in renderings(report).items():
        assert text == (REPORTS / f"{name}.{kind}").read_text(encoding="utf-8"), kind


@pytest.mark.parametrize("name", FIXTURES)
def test_reading_and_writing_keeps_every_value_and_adds_only_the_version(name: str) -> None:
    original = json.loads((REPORTS / f"{name}.report.json").read_text(encoding="utf-8"))
    written = json.loads(dumps(real_report(name)))
    assert written.pop("schema_version") == SCHEMA_VERSION
    for task in written["tasks"]:  # the fields version 2 added are not recorded, so not written
        assert not {"estimate", "prompt_cost", "guidance"} & set(task)
    assert written == original
    assert list(written) == list(original)  # same key order, so a diff of two files stays readable


def test_rows_are_kept_per_split() -> None:
    task = real_report().tasks[0]
    assert {r.split for r in task.instances.test} == {"test"} and {r.split for r in task.instances.val} == {"val"}
    assert len(task.instances.test) == task.split_sizes["test"]
    assert len(task.instances.val) == task.split_sizes["val"]


def test_a_fresh_run_round_trips_and_renders_the_same_from_the_file(tmp_path: Path) -> None:
    with FakeOpenAI(responder=rule_task.responder()) as sim:
        rule_task.write_workspace(tmp_path, sim.url, budget=120)
        from gepa_action.tune import TuneOptions, run_tune

        workspace = load_workspace(find_config(tmp_path))
        built = run_tune(workspace, [], TuneOptions()).report
    path = Path(workspace.root) / ".gepa/runs" / built.run_id / "report.json"
    read = load(path)
    assert read == built
    assert json.loads(path.read_text(encoding="utf-8"))["schema_version"] == SCHEMA_VERSION
    assert renderings(read) == renderings(built)
    assert (path.parent / "report.md").read_text(encoding="utf-8") == render_report(read)


def test_tune_json_prints_the_file_it_wrote(tmp_path: Path) -> None:
    with FakeOpenAI(responder=rule_task.responder()) as sim:
        rule_task.write_workspace(tmp_path, sim.url, budget=60)
        result = CliRunner().invoke(main, ["-C", str(tmp_path), "tune", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    assert result.stdout == (tmp_path / ".gepa/runs" / run_id / "report.json").read_text(encoding="utf-8")


# -- refused input ------------------------------------------------------------------------------------


def _fixture_data() -> dict:
    return json.loads((REPORTS / "route_v1.report.json").read_text(encoding="utf-8"))


def _refusal(tmp_path: Path, text: str) -> InputError:
    path = tmp_path / "report.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load(path)
    error = caught.value
    assert error.exit_code == 2
    message = str(error)
    assert "\n" not in message and message.startswith(str(path)), message
    assert "Traceback" not in message
    return error


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    data = {**_fixture_data(), "schema_version": SCHEMA_VERSION + 1}
    error = _refusal(tmp_path, json.dumps(data))
    assert error.key == "schema_version"
    assert f"{SCHEMA_VERSION + 1} is newer than this gepa-tune reads" in str(error)
    assert "upgrade gepa-tune" in str(error)


@pytest.mark.parametrize(("change", "key", "what"), [
    (lambda d: d.update(schema_version="2"), "schema_version", "not an integer"),
    (lambda d: d.update(schema_version=0), "schema_version", "not a version"),
    (lambda d: d.pop("schema"), "schema_version", "missing"),
    (lambda d: d["tasks"][0]["instances"][3].update(after="junk"), "tasks[0].instances[3].after",
     "expected a number, got a string"),
    (lambda d: d["tasks"][0]["instances"][0].update(split="train"), "tasks[0].instances[0].split",
     "is not 'test' or 'val'"),
    (lambda d: d["tasks"][0]["usage"].pop("cost_usd"), "tasks[0].usage.cost_usd", "missing"),
    (lambda d: d["tasks"][0]["scores"].update(surprise=1), "tasks[0].scores.surprise", "not a key"),
    (lambda d: d["tasks"][0]["counts"].update(improved=True), "tasks[0].counts.improved",
     "expected an integer, got a boolean"),
    (lambda d: d["tasks"][0].update(best=[]), "tasks[0].best", "expected an object, got a list"),
    (lambda d: d.update(tasks={}), "tasks", "expected a list"),
])
def test_a_malformed_report_names_the_key_and_what_is_wrong(tmp_path: Path, change, key: str, what: str) -> None:
    data = _fixture_data()
    change(data)
    error = _refusal(tmp_path, json.dumps(data))
    assert error.key == key and what in str(error), str(error)
    assert "gepa-tune report" in str(error) or "upgrade" in str(error)  # what to do about it


# What the renderers used to be asked to survive (report.md, PR body, job summary, terminal line), now
# stopped at the door: such a report.json never reaches them, and the user gets one line naming the key.
@pytest.mark.parametrize(("change", "key", "what"), [
    (lambda t: t.update(proposals=None), "tasks[0].proposals", "expected an object, got null"),
    (lambda t: t.update(usage=None), "tasks[0].usage", "expected an object, got null"),
    (lambda t: t.update(counts=None), "tasks[0].counts", "expected an object, got null"),
    (lambda t: t.update(eval_set=None), "tasks[0].eval_set", "expected an object, got null"),
    (lambda t: t.update(models=None), "tasks[0].models", "expected an object, got null"),
    (lambda t: t.update(split_sizes=None), "tasks[0].split_sizes", "expected an object, got null"),
    (lambda t: t.update(scores=None), "tasks[0].scores", "expected an object, got null"),
    (lambda t: [t.pop(key) for key in list(t) if key != "task"], "tasks[0].description", "missing"),
    (lambda t: t["usage"].update(cost_usd=None), "tasks[0].usage.cost_usd", "expected a number, got null"),
    (lambda t: t["instances"].append({"id": None, "split": "test", "before": None, "after": "junk"}),
     "tasks[0].instances[43].id", "expected a string, got null"),
    (lambda t: t["lineage"].append("junk"), "tasks[0].lineage[4]", "expected an object, got a string"),
    (lambda t: t.update(candidates={}), "tasks[0].candidates", "expected a list, got an object"),
    (lambda t: t["history"][0].update(best_val="0.5"), "tasks[0].history[0].best_val",
     "expected a number, got a string"),
    (lambda t: t["usage"]["retries_by_kind"].update(timeout="3"), "tasks[0].usage.retries_by_kind.timeout",
     "expected an integer, got a string"),
], ids=["proposals null", "usage null", "counts null", "eval_set null", "models null", "split_sizes null",
        "scores null", "only the name", "cost null", "junk row", "junk lineage step", "candidates object",
        "score as text", "retry count as text"])
def test_a_report_the_renderers_could_not_show_is_refused(tmp_path: Path, change, key: str, what: str) -> None:
    data = _fixture_data()
    change(data["tasks"][0])
    error = _refusal(tmp_path, json.dumps(data))
    assert error.key == key and what in str(error), str(error)


@pytest.mark.parametrize(("text", "what"), [
    ('{"schema": 1, "run_id": ', "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got a list"),
    ("", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_text_that_is_not_a_report_is_one_line(tmp_path: Path, text: str, what: str) -> None:
    assert what in str(_refusal(tmp_path, text))


def test_not_a_number_is_refused(tmp_path: Path) -> None:
    text = (REPORTS / "route_v1.report.json").read_text(encoding="utf-8")
    text = text.replace('"cost_usd": ', '"cost_usd": NaN, "x": ', 1)
    assert "NaN, which no score or count can be" in str(_refusal(tmp_path, text))


def test_an_unreadable_report_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "report.json").mkdir()
    with pytest.raises(InputError, match="cannot be read"):
        load(tmp_path / "report.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="not UTF-8"):
        load(tmp_path / "bin.json")


def test_loads_names_the_file_it_was_given() -> None:
    with pytest.raises(InputError, match=r"^somewhere/report\.json: schema_version"):
        loads('{"schema": 1, "schema_version": 99}', "somewhere/report.json")
