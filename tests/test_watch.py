"""The drift watch end to end: `gepa-tune watch --issue` re-scores the committed prompts against a
loopback OpenAI-protocol server whose answers change between the lock's run and the watch (a silent
model update), and keeps one issue on a stateful fake GitHub (PyGithub over real HTTP) in step with it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from fakes.actions_runner import read_outputs, run_step
from fakes.git_repos import ENV, make_origin
from fakes.github_server import FakeGitHub
from fakes.openai_server import FakeOpenAI
from fakes.workspace_factory import GEPA_YAML, KEYWORD_LABELS, LABELLED_ROWS, jsonl

from gepa_action import baseline
from gepa_action.config import WatchConfig
from gepa_action.workspace import load_workspace

REPO = "octo/prompts"
TOKEN = "ghs_fake_watch_token_456"
API_KEY = "sk-watch-secret-0123456789"
LABEL = "gepa-tune-drift"


def labeller(overrides: dict[str, str]) -> Callable[[dict], str]:
    """The keyword model of workspace_factory, with some keywords answered differently (a model update)."""
    table = {**KEYWORD_LABELS, **overrides}

    def answer(body: dict) -> str:
        text = body["messages"][-1]["content"]
        return next((label for word, label in table.items() if word in text), "unknown")

    return answer


@dataclass
class World:
    tmp: Path
    clone: Path
    github: FakeGitHub
    server: FakeOpenAI

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return run_step(self.tmp, self.clone, *args, repository=REPO, token=TOKEN, api_url=self.github.url,
                        run_id="77", **{"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": self.server.url, **(env or {})})

    def watch(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.cli("watch", "--issue", *args, env=env)

    def outputs(self) -> dict[str, str]:
        return read_outputs(self.tmp)

    def summary(self) -> str:
        return (self.tmp / "step_summary").read_text()

    def issues(self) -> list[dict]:
        return self.github.issues(REPO)

    def answer(self, **overrides: str) -> None:
        self.server.responder = labeller(overrides)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    with FakeOpenAI(responder=labeller({})) as server, FakeGitHub(token=TOKEN) as github:
        files = {"gepa.yaml": GEPA_YAML, "prompts/system.j2": "Classify the ticket.",
                 "prompts/user.j2": "Ticket: {{ text }}", "evals/set.jsonl": jsonl(LABELLED_ROWS)}
        bare, clone = make_origin(tmp_path, files=files)
        github.add_repo(REPO, bare)
        w = World(tmp_path, clone, github, server)
        recorded = w.cli("eval", "--update-baseline")  # the lock's run: val 0.5, test 0.5
        assert recorded.exit_code == 0, recorded.output
        server.requests.clear()
        yield w


def test_no_drift_opens_nothing_and_the_cache_is_bypassed(world: World) -> None:
    result = world.watch()
    assert result.exit_code == 0, result.output
    # every answer was cached by the lock's run, and the watch still asked the model for each of them
    assert len(world.server.requests) == 4
    assert "triage: val 0.500 → 0.500 (+0.000), test 0.500 → 0.500 (+0.000), tolerance 0.05 ok" in result.stdout
    assert world.issues() == []
    assert world.github.calls("POST") == [] and world.github.calls("PATCH") == []
    outputs = world.outputs()
    assert outputs["drifted"] == "false" and outputs["issue-number"] == "" and outputs["issue-operation"] == "none"
    assert "0 of 1 task(s) drifted" in world.summary()


def test_a_model_update_opens_one_issue_updates_it_and_closes_it_on_recovery(world: World) -> None:
    lock = baseline.load(world.clone)
    assert lock is not None
    entry = lock.tasks["triage"]

    world.answer(crashes="crash")  # the provider's new weights: a1 (val) is answered wrongly now
    first = world.watch()
    assert first.exit_code == 0, first.output  # drift is a finding, not a failure of the step
    assert "triage: val 0.500 → 0.000 (-0.500)" in first.stdout and "DRIFTED" in first.stdout
    assert "regressed val a1: 1.00 → 0.00" in first.stdout
    [issue] = world.issues()
    assert issue["state"] == "open" and [label["name"] for label in issue["labels"]] == [LABEL]
    body = issue["body"]
    assert "| val | 0.500 | 0.000 | -0.500 | 0.05 | 2 |" in body
    assert "| val | a1 | 1.000 | 0.000 | crash |" in body  # the per-instance regression, with today's output
    assert "a4" not in body  # steady instances are not listed
    assert "task test-model" in body  # the models
    es = entry.eval_set
    assert f"set@1 sha256:{es['sha256'][:12]}" in body  # the eval set ref: name, version, content hash
    assert entry.written_at in body and "eval --update-baseline" in body  # the lock's date and run
    assert "`gepa-tune tune triage`" in body  # the suggested tuning run, and without --tune-workflow:
    assert "tuning workflow for them (Actions → the workflow → Run workflow, tasks: `triage`)" in body
    assert "https://github.com/octo/prompts/actions/runs/77" in body
    outputs = world.outputs()
    assert outputs["drifted"] == "true" and outputs["drifted-tasks"] == "triage"
    assert outputs["issue-number"] == str(issue["number"]) and outputs["issue-operation"] == "created"
    assert outputs["issue-url"] == f"https://github.com/{REPO}/issues/{issue['number']}"
    assert "1 of 1 task(s) drifted" in world.summary() and outputs["issue-url"] in world.summary()
    drift = json.loads((world.clone / ".gepa/watch/drift.json").read_text())
    assert drift["schema_version"] == 1 and drift["tasks"][0]["status"] == "drifted"

    again = world.watch()  # still drifted, same finding: same issue, refreshed, nobody notified again
    assert again.exit_code == 0, again.output
    assert len(world.issues()) == 1 and world.outputs()["issue-operation"] == "unchanged"
    assert world.github.comments(REPO, issue["number"]) == []

    world.answer(crashes="crash", export="export")  # worse: a4 (test) goes too
    worse = world.watch()
    assert worse.exit_code == 0, worse.output
    [updated] = world.issues()
    assert updated["number"] == issue["number"] and world.outputs()["issue-operation"] == "updated"
    assert "| test | a4 | 1.000 | 0.000 | export |" in updated["body"]
    [comment] = world.github.comments(REPO, issue["number"])
    assert "finding changed" in comment["body"] and "test 0.500 → 0.000" in comment["body"]

    world.answer()  # the provider rolled back: scores recover
    recovered = world.watch()
    assert recovered.exit_code == 0, recovered.output
    [closed] = world.issues()
    assert closed["state"] == "closed" and closed["state_reason"] == "completed"
    comments = world.github.comments(REPO, issue["number"])
    assert len(comments) == 2 and comments[-1]["body"].startswith("Scores recovered")
    outputs = world.outputs()
    assert outputs["drifted"] == "false" and outputs["issue-operation"] == "closed"

    calm = world.watch()  # nothing open, nothing drifted: nothing to do
    assert calm.exit_code == 0 and len(world.issues()) == 1 and world.outputs()["issue-operation"] == "none"
    for issue_json in world.issues():  # no secret reached GitHub
        assert TOKEN not in json.dumps(issue_json) and API_KEY not in json.dumps(issue_json)


def test_an_issue_someone_filed_under_the_label_is_left_alone(world: World) -> None:
    number = world.github.add_issue(REPO, "Scores look off?", "I think triage got worse", labels=(LABEL,))
    world.answer(crashes="crash")
    assert world.watch().exit_code == 0
    issues = world.issues()
    assert len(issues) == 2 and issues[0]["number"] == number and issues[0]["body"] == "I think triage got worse"
    assert "gepa-tune:drift" in issues[1]["body"]


def verdict(result: Result) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("triage:"))


def test_tolerance_from_the_option_the_task_and_the_workspace(world: World) -> None:
    world.answer(crashes="crash")  # val drops by 0.5
    assert verdict(world.cli("watch")).endswith("tolerance 0.05 DRIFTED")  # WatchConfig's default
    assert verdict(world.cli("watch", "--tolerance", "0.5")).endswith("tolerance 0.5 ok")
    config = (world.clone / "gepa.yaml").read_text()
    (world.clone / "gepa.yaml").write_text(config + "watch:\n  tolerance: 0.6\n")
    assert verdict(world.cli("watch")).endswith("tolerance 0.6 ok")
    task_level = config.replace("    metric: {type: exact, ignore_case: true}\n",
                                "    metric: {type: exact, ignore_case: true}\n    watch: {tolerance: 0.1}\n")
    (world.clone / "gepa.yaml").write_text(task_level + "watch:\n  tolerance: 0.6\n")
    assert verdict(world.cli("watch")).endswith("tolerance 0.1 DRIFTED")
    assert verdict(world.cli("watch", "--tolerance", "0.5")).endswith("tolerance 0.5 ok")  # the option wins
    assert world.issues() == []  # without --issue, GitHub is not touched


def test_a_task_changed_since_its_record_is_skipped_without_a_call(world: World) -> None:
    (world.clone / "prompts/system.j2").write_text("Classify the ticket, carefully.")
    result = world.watch()
    assert result.exit_code == 0, result.output
    assert verdict(result).startswith("triage: skipped: changed since its record (prompts/system.j2 changed)")
    assert world.server.requests == [] and world.issues() == []


def test_missing_issue_permission_fails_before_any_model_call(world: World, tmp_path: Path) -> None:
    with FakeGitHub(token=TOKEN, permissions={"metadata": "read", "contents": "write"}) as narrow:
        narrow.add_repo(REPO, tmp_path / "origin.git")
        world.answer(crashes="crash")
        result = world.watch(env={"GITHUB_API_URL": narrow.url})
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: GitHub: could not list the open issues labelled 'gepa-tune-drift'")
    assert "HTTP 403" in last and "`permissions: issues: write`" in last and "pull-requests" not in last
    assert TOKEN not in result.stderr
    assert world.server.requests == []
    assert world.outputs()["drifted"] == "false" and "**Failed:**" in world.summary()


def test_without_a_repository_or_token_issue_mode_is_bad_input(world: World) -> None:
    result = world.watch(env={"GITHUB_REPOSITORY": ""})
    assert result.exit_code == 2
    assert "repository: no repository to open the drift issue in" in result.stderr.strip().splitlines()[-1]
    result = world.watch(env={"GITHUB_TOKEN": ""})
    assert result.exit_code == 2 and "github-token: no GitHub token" in result.stderr
    assert world.server.requests == []


def test_hostile_model_output_is_inert_in_the_issue(world: World) -> None:
    world.answer(crashes="@org/team closes #1 <script>x</script> | `y`")
    assert world.watch().exit_code == 0
    [issue] = world.issues()
    assert "@org/team" not in issue["body"] and "closes #1" not in issue["body"]
    assert "<script>" not in issue["body"]
    row = next(line for line in issue["body"].splitlines() if line.startswith("| val | a1 |"))
    assert row.count(" | ") == 5  # the pipe in the answer did not add a column


def test_an_old_lock_without_test_instances_still_works(world: World) -> None:
    lock_file = world.clone / "gepa.lock"
    data = yaml.safe_load(lock_file.read_text())
    assert data["tasks"]["triage"]["test_instances"] == {"a3": 0.0, "a4": 1.0}  # what eval now records
    del data["tasks"]["triage"]["test_instances"]
    lock_file.write_text(yaml.safe_dump(data, sort_keys=True))
    old = baseline.load(world.clone)
    assert old is not None and old.tasks["triage"].test_instances == {}
    assert "test_instances" not in baseline.dumps(old)  # rewriting an old entry does not invent the field
    world.answer(export="export")  # test drops; its instances cannot be named without the record
    result = world.watch()
    assert result.exit_code == 0, result.output
    [issue] = world.issues()
    assert "| test | 0.500 | 0.000 | -0.500 |" in issue["body"]
    assert "no per-instance test scores" in issue["body"]


@pytest.mark.parametrize(("yaml_text", "needle"), [
    ("watch:\n  tolerance: 2\n", "gepa.yaml:"),
    ("watch:\n  tolerence: 0.1\n", "tolerence"),
    ("watch: [0.1]\n", "watch"),
])
def test_a_bad_watch_key_is_one_line_and_exit_2(world: World, yaml_text: str, needle: str) -> None:
    (world.clone / "gepa.yaml").write_text((world.clone / "gepa.yaml").read_text() + yaml_text)
    result = world.cli("watch")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: gepa.yaml:") and needle in lines[0]
    assert "Traceback" not in result.output and world.server.requests == []


def test_bad_cli_values_are_one_line(world: World) -> None:
    for args in (["--tolerance", "nan"], ["--tolerance", "1.5"], ["--label", "a,b"], ["--label", " "],
                 ["--tune-workflow", "../x.yml"], ["--tune-workflow", "tune"]):
        result = world.cli("watch", *args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
    assert world.server.requests == []


def test_the_defaults_are_the_dataclass_defaults(world: World) -> None:
    workspace = load_workspace(world.clone / "gepa.yaml")
    assert workspace.watch == WatchConfig() and workspace.tasks[0].watch is None


def test_json_output_and_no_cache(world: World) -> None:
    world.answer(crashes="crash")
    result = world.cli("watch", "--json", "--no-cache", env={"GITHUB_ACTIONS": ""})  # no workflow commands
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    [task] = data["tasks"]
    assert task["status"] == "drifted" and task["regressions"][0]["id"] == "a1"
    assert task["eval_set"]["name"] == "set" and task["models"]["task"] == "test-model"
    assert data["usage"]["requests"] == 4


def test_a_fresh_client_asks_again_refreshes_the_cache_and_asks_once_per_request(
        openai_server: FakeOpenAI, lm_config: Callable[..., object], tmp_path: Path) -> None:
    import asyncio

    from gepa_action.cache import ResponseCache
    from gepa_action.lm.client import LMClient

    config = lm_config()
    messages = [{"role": "user", "content": "hello"}]

    async def ask(cache: ResponseCache, *, fresh: bool, times: int = 1) -> list[str]:
        async with LMClient(config, api_key="k", base_url=None, cache=cache, fresh=fresh) as lm:
            return [(await lm.complete("fake-model", messages)).text for _ in range(times)]

    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        openai_server.responder = lambda body: "old weights"
        assert asyncio.run(ask(cache, fresh=False)) == ["old weights"]
        openai_server.responder = lambda body: "new weights"
        assert asyncio.run(ask(cache, fresh=False)) == ["old weights"]  # the cache hides the update
        assert len(openai_server.requests) == 1
        assert asyncio.run(ask(cache, fresh=True, times=2)) == ["new weights", "new weights"]
        assert len(openai_server.requests) == 2  # asked again, once for two identical requests
        assert asyncio.run(ask(cache, fresh=False)) == ["new weights"]  # the fresh answer replaced the old
        assert len(openai_server.requests) == 2


def test_a_findings_folder_leading_outside_is_refused_before_any_call(world: World, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (world.clone / ".gepa").mkdir(exist_ok=True)
    (world.clone / ".gepa/watch").symlink_to(outside)
    result = world.cli("watch")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: .gepa/watch/drift.json: the file is a symlink that leads outside the workspace")
    assert list(outside.iterdir()) == [] and world.server.requests == []


@pytest.mark.parametrize("value", [".nan", "'high'"])
def test_a_broken_score_in_the_lock_is_one_line(world: World, value: str) -> None:
    lock_file = world.clone / "gepa.lock"
    text = lock_file.read_text()
    lock_file.write_text(re.sub(r"(test_instances:\n\s+a3: )\S+", rf"\g<1>{value}", text))
    result = world.cli("watch")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: gepa.lock:") and "test_instances" in line
    assert world.server.requests == []


def test_the_action_key_is_masked_and_an_echoed_key_never_reaches_the_issue(world: World) -> None:
    world.answer(crashes="crash")
    world.server.echo_headers("authorization")  # a misconfigured proxy: the key comes back in every answer
    result = world.watch(env={"OPENAI_API_KEY": "", "GEPA_TUNE_API_KEY": API_KEY})
    assert result.exit_code == 0, result.output
    assert world.server.headers[-1]["authorization"] == f"Bearer {API_KEY}"  # the Action's key was used
    assert f"::add-mask::{API_KEY}" in result.stdout.splitlines() and f"::add-mask::{TOKEN}" in result.stdout
    shown = "\n".join(line for line in result.output.splitlines() if not line.startswith("::add-mask::"))
    [issue] = world.issues()
    drift_json = (world.clone / ".gepa/watch/drift.json").read_text()
    summary = world.summary()
    for text in (shown, issue["body"], drift_json, summary):
        assert API_KEY not in text and TOKEN not in text
    assert r"Bearer \[redacted\]" in issue["body"]  # the echo was there, scrubbed before it was cached or shown


def test_two_watches_at_once_leave_one_open_issue(world: World) -> None:
    world.answer(crashes="crash")
    marker = re.compile(r"<!-- gepa-tune:drift \w+ -->")
    first = world.watch()  # learn this workspace's marker from a real run, then start over
    assert first.exit_code == 0, first.output
    [issue] = world.issues()
    mark = marker.search(issue["body"]).group(0)
    world.answer()
    assert world.watch().exit_code == 0 and world.issues()[0]["state"] == "closed"
    world.answer(crashes="crash")
    # the other watch's issue appears between our look-up and our create
    world.github.before_next("POST", r"/issues$", lambda: world.github.add_issue(
        REPO, "gepa-tune: prompt scores drifted (triage)", f"{mark}\nthe other watch", user="github-actions[bot]",
        labels=(LABEL,)))
    result = world.watch()
    assert result.exit_code == 0, result.output
    open_issues = [i for i in world.issues() if i["state"] == "open"]
    assert len(open_issues) == 1 and "the other watch" not in open_issues[0]["body"]
    ours = max(i["number"] for i in world.issues())
    assert [i["state_reason"] for i in world.issues() if i["number"] == ours] == ["not_planned"]
    assert world.outputs()["issue-number"] == str(open_issues[0]["number"])


def test_github_failing_after_the_scoring_still_reports_the_drift(world: World) -> None:
    world.answer(crashes="crash")
    world.github.fail_next("POST", r"/issues$", 502)
    result = world.watch()
    assert result.exit_code == 1
    assert "could not open an issue" in result.stderr.strip().splitlines()[-1]
    outputs = world.outputs()
    assert outputs["drifted"] == "true" and outputs["issue-operation"] == "none"
    assert outputs["report-path"] == ".gepa/watch/drift.json" and (world.clone / outputs["report-path"]).exists()
    summary = world.summary()
    assert "1 of 1 task(s) drifted" in summary and "**Failed:**" in summary
    assert world.issues() == []


def test_an_issue_stays_open_while_its_task_cannot_be_compared(world: World) -> None:
    world.answer(crashes="crash")
    assert world.watch().exit_code == 0
    [issue] = world.issues()
    assert "tasks=triage -->" in issue["body"]
    (world.clone / "prompts/system.j2").write_text("Classify the ticket, carefully.")  # edited, not re-recorded
    world.answer()
    result = world.watch()
    assert result.exit_code == 0, result.output
    assert f"drift issue #{issue['number']} left open: triage could not be compared this time" in result.stderr
    assert world.issues()[0]["state"] == "open" and world.github.comments(REPO, issue["number"]) == []
    assert world.outputs()["issue-number"] == str(issue["number"])


def test_the_issue_says_how_to_dispatch_the_tuning_workflow(world: World) -> None:
    world.answer(crashes="crash")
    assert world.watch("--tune-workflow", "gepa-tune.yml").exit_code == 0
    [issue] = world.issues()
    assert f"[tuning workflow](https://github.com/{REPO}/actions/workflows/gepa-tune.yml)" in issue["body"]
    assert '`gh workflow run gepa-tune.yml -f tasks="triage"`' in issue["body"]
