"""Offline validation: every broken file ends in one line naming file, line/key, problem and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.workspace_factory import GEPA_YAML, INSTANCES, jsonl, make_workspace, with_steps

from gepa_action.cli import main
from gepa_action.errors import InputError
from gepa_action.evals import load_eval_set, split_of
from gepa_action.workspace import find_config, load_workspace

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def check_error(tmp_path: Path, expected: str, **kwargs) -> str:
    """Run `gepa-tune check` on a workspace built from kwargs; it must fail with exit 2 and `expected`."""
    make_workspace(tmp_path, **kwargs)
    result = run_cli("-C", str(tmp_path), "check")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert expected in result.output, result.output
    return result.output


def test_repository_example_workspace_checks_clean():
    result = run_cli("-C", str(REPO), "check")
    assert result.exit_code == 0, result.output
    assert "ok  triage" in result.output
    assert "tickets@1.0 sha256:" in result.output
    assert "48 instances" in result.output


def test_check_reports_a_good_workspace(tmp_path):
    make_workspace(tmp_path)
    result = run_cli("-C", str(tmp_path), "check")
    assert result.exit_code == 0, result.output
    assert "ok  triage: 2 template(s), set@1" in result.output


def test_yaml_syntax_error_names_the_line(tmp_path):
    check_error(tmp_path, "gepa.yaml:4: invalid YAML", config="lm:\n  task_model: x\ntasks:\n  - name: [broken\n")


def test_unknown_key_suggests_the_close_one(tmp_path):
    out = check_error(tmp_path, "gepa.yaml:13: tasks[0].metrc: unknown key 'metrc'; did you mean 'metric'?",
                      config=GEPA_YAML.replace("metric:", "metrc:"))
    assert len(out.strip().splitlines()) == 1


def test_api_key_in_config_is_refused_without_echoing_it(tmp_path):
    config = GEPA_YAML.replace("lm:\n", "lm:\n  api_key: sk-live-not-a-real-key\n")
    out = check_error(tmp_path, "gepa.yaml:2: lm.api_key: API keys never live in gepa.yaml", config=config)
    assert "not-a-real-key" not in out


def test_wrong_type_names_key_and_line(tmp_path):
    check_error(tmp_path, "gepa.yaml:4: lm.concurrency: expected an integer, got 'many'",
                config=GEPA_YAML.replace("concurrency: 4", "concurrency: many"))


def test_missing_eval_version_says_how_to_fix(tmp_path):
    check_error(tmp_path, "tasks[0].eval: missing required key 'version'; label the eval set",
                config=GEPA_YAML.replace('      version: "1"\n', ""))


def test_split_fractions_must_add_up(tmp_path):
    config = GEPA_YAML + "    split: {train: 0.5, val: 0.5, test: 0.5}\n"
    check_error(tmp_path, "gepa.yaml:14: tasks[0].split: train + val + test must add up to 1, got 1.5",
                config=config)


def test_optimize_must_name_a_template_of_the_task(tmp_path):
    config = GEPA_YAML + "    optimize: [prompts/other.j2]\n"
    check_error(tmp_path, "tasks[0].optimize[0]: 'prompts/other.j2' is not a template of this task", config=config)


def test_template_syntax_error_names_template_line(tmp_path):
    check_error(tmp_path, "prompts/user.j2:2: template syntax error",
                files={"prompts/user.j2": "Ticket:\n{{ text }\n"})


def test_missing_template_file(tmp_path):
    make_workspace(tmp_path)
    (tmp_path / "prompts/system.j2").unlink()
    result = run_cli("-C", str(tmp_path), "check")
    assert result.exit_code == 2
    assert "prompts/system.j2: template file not found; create it or fix the path in gepa.yaml" in result.output


def test_malformed_jsonl_line(tmp_path):
    text = jsonl(INSTANCES[:2]) + '{"id": "x", "inputs": {"text": "hi"\n'
    check_error(tmp_path, "evals/set.jsonl:3: invalid JSON", files={"evals/set.jsonl": text})


def test_duplicate_ids_point_at_both_lines(tmp_path):
    rows = [*INSTANCES, INSTANCES[1]]
    check_error(tmp_path, "evals/set.jsonl:5: duplicate id 'a2' (first at line 2)",
                files={"evals/set.jsonl": jsonl(rows)})


def test_unknown_instance_field(tmp_path):
    rows = [dict(INSTANCES[0]), {"id": "z", "inputs": {"text": "x"}, "expectd": "bug"}]
    check_error(tmp_path, "evals/set.jsonl:2: unknown field 'expectd'", files={"evals/set.jsonl": jsonl(rows)})


def test_empty_eval_set(tmp_path):
    check_error(tmp_path, "evals/set.jsonl: the eval set is empty", files={"evals/set.jsonl": "\n"})


def test_instance_missing_a_template_variable_names_instance_and_variable(tmp_path):
    rows = [INSTANCES[0], {"id": "no-text", "inputs": {"body": "x"}, "expected": "bug"}]
    check_error(tmp_path, "evals/set.jsonl:2: instance 'no-text': has no input 'text', which prompts/user.j2 uses",
                files={"evals/set.jsonl": jsonl(rows)})


def test_yaml_eval_set_errors_have_lines(tmp_path):
    config = GEPA_YAML.replace("evals/set.jsonl", "evals/set.yaml")
    yaml_set = "- id: y1\n  inputs: {text: hello}\n  expected: bug\n- id: y2\n  inputs: {text: bye}\n  split: dev\n"
    check_error(tmp_path, "evals/set.yaml:4: instance 'y2': unknown split 'dev'",
                config=config, files={"evals/set.yaml": yaml_set})


def test_check_reports_every_broken_task(tmp_path):
    config = GEPA_YAML + """\
  - name: second
    prompt: {user: prompts/missing.j2}
    eval: {path: evals/set.jsonl, version: "1"}
    metric: exact
"""
    make_workspace(tmp_path, config=config, files={"prompts/user.j2": "{{ text "})
    result = run_cli("-C", str(tmp_path), "check")
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.output
    assert "prompts/user.j2:1: template syntax error" in errors[0]
    assert "prompts/missing.j2: template file not found" in errors[1]


def test_no_config_found(tmp_path):
    result = run_cli("-C", str(tmp_path), "check")
    assert result.exit_code == 2
    assert "no gepa.yaml here or in any parent folder; run `gepa-tune init`" in result.output


def test_config_found_in_parent_and_by_flag(tmp_path):
    make_workspace(tmp_path)
    sub = tmp_path / "prompts"
    assert find_config(sub) == tmp_path / "gepa.yaml"
    (tmp_path / "gepa.yaml").rename(tmp_path / "other.yaml")
    assert run_cli("--config", str(tmp_path / "other.yaml"), "check").exit_code == 0


def test_unknown_task_name_is_bad_input(tmp_path):
    make_workspace(tmp_path)
    result = run_cli("-C", str(tmp_path), "eval", "nope")
    assert result.exit_code == 2
    assert "no task named 'nope'; known tasks: triage" in result.output


def test_pipeline_needs_outputs_between_steps(tmp_path):
    config = with_steps("""\
        - name: summarize
          user: prompts/user.j2
        - name: label
          user: prompts/label.j2
        """)
    check_error(tmp_path, "gepa.yaml:8: tasks[0].steps[0]: step 'summarize' has no 'output' variable",
                config=config, files={"prompts/label.j2": "Label: {{ summary }}"})


def test_pipeline_step_outputs_are_available_to_later_steps(tmp_path):
    config = with_steps("""\
        - name: summarize
          user: prompts/user.j2
          output: summary
        - name: label
          system: prompts/system.j2
          user: prompts/label.j2
        """)
    make_workspace(tmp_path, config=config, files={"prompts/label.j2": "Label: {{ summary }}"})
    workspace = load_workspace(tmp_path / "gepa.yaml")
    task = workspace.tasks[0]
    assert task.modules == ("prompts/user.j2", "prompts/system.j2", "prompts/label.j2")
    assert task.optimize == task.modules


# --- eval sets: hash and splits -------------------------------------------------------------------

def _load(path: Path):
    return load_eval_set(path, path.name, name="s", version="1", fractions=(0.4, 0.3, 0.3), seed=7)


def test_splits_are_stable_when_instances_are_appended(tmp_path):
    rows = [{"id": f"i{n}", "inputs": {"text": str(n)}, "expected": "x"} for n in range(200)]
    path = tmp_path / "set.jsonl"
    path.write_text(jsonl(rows))
    before = {i.id: i.split for i in _load(path).instances}
    more = rows + [{"id": f"new{n}", "inputs": {"text": "n"}, "expected": "y"} for n in range(100)]
    path.write_text(jsonl(list(reversed(more))))
    after = {i.id: i.split for i in _load(path).instances}
    assert all(after[k] == v for k, v in before.items())
    counts = {s: sum(1 for v in after.values() if v == s) for s in ("train", "val", "test")}
    assert 90 <= counts["train"] <= 150 and counts["val"] > 60 and counts["test"] > 60


def test_split_depends_on_seed_and_respects_explicit_split(tmp_path):
    ids = [f"i{n}" for n in range(50)]
    assert [split_of(i, (0.4, 0.3, 0.3), 1) for i in ids] != [split_of(i, (0.4, 0.3, 0.3), 2) for i in ids]
    path = tmp_path / "set.jsonl"
    path.write_text(jsonl([{"id": i, "inputs": {}, "split": "test"} for i in ids]))
    assert {i.split for i in _load(path).instances} == {"test"}


def test_content_hash_ignores_order_and_format_but_not_content(tmp_path):
    rows = [{"id": "b", "inputs": {"text": "two"}, "expected": "y"},
            {"id": "a", "inputs": {"text": "one"}, "expected": "x", "notes": "n"}]
    (tmp_path / "one.jsonl").write_text(jsonl(rows))
    (tmp_path / "two.jsonl").write_text(jsonl(list(reversed(rows))))
    (tmp_path / "three.yaml").write_text(
        "instances:\n"
        "  - {id: a, inputs: {text: one}, expected: x, notes: n}\n"
        "  - {id: b, inputs: {text: two}, expected: y}\n")
    hashes = {_load(tmp_path / f).sha256 for f in ("one.jsonl", "two.jsonl", "three.yaml")}
    assert len(hashes) == 1
    rows[0]["expected"] = "z"
    (tmp_path / "one.jsonl").write_text(jsonl(rows))
    assert _load(tmp_path / "one.jsonl").sha256 not in hashes


def test_eval_set_error_is_an_input_error_with_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(jsonl(INSTANCES) + json.dumps({"id": "", "inputs": {}}) + "\n")
    with pytest.raises(InputError) as info:
        _load(path)
    assert str(info.value).startswith("set.jsonl:5: missing or empty 'id'")


def test_init_scaffolds_a_workspace_that_checks_clean_and_never_overwrites(tmp_path):
    result = run_cli("init", str(tmp_path))
    assert result.exit_code == 0, result.output
    for name in ("gepa.yaml", "prompts/triage/system.j2", "evals/tickets.jsonl",
                 ".github/workflows/gepa-tune-eval.yml"):
        assert (tmp_path / name).is_file(), name
    assert run_cli("-C", str(tmp_path), "check").exit_code == 0
    again = run_cli("init", str(tmp_path))
    assert again.exit_code == 2
    assert "already exists; init never overwrites your files" in again.output


def test_empty_optimize_list_is_refused(tmp_path):
    check_error(tmp_path, "tasks[0].optimize: the list is empty, so tuning could change nothing",
                config=GEPA_YAML + "    optimize: []\n")


def test_a_folder_where_a_template_should_be(tmp_path):
    make_workspace(tmp_path)
    (tmp_path / "prompts/system.j2").unlink()
    (tmp_path / "prompts/system.j2").mkdir()
    result = run_cli("-C", str(tmp_path), "check")
    assert result.exit_code == 2
    assert "prompts/system.j2: the template file is a folder, not a file; point at a file" in result.output


def test_jsonl_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl(INSTANCES).encode())
    assert [i.id for i in _load(path).instances] == ["a1", "a2", "a3", "a4"]
