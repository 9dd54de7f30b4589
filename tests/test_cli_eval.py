"""`gepa-tune eval` end to end: real HTTP to a fake OpenAI server, real files, real cache."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakes.openai_server import Reply
from fakes.workspace_factory import GEPA_YAML, make_workspace, with_steps

from gepa_action.cli import main

KEY = "sk-test-verysecretkey-0123456789abcdef"

ANSWERS = {"crashes": "bug", "charged": "Billing.", "dark mode": "feature request", "export": "how_to"}


def label_responder(body: dict) -> str:
    text = body["messages"][-1]["content"]
    return next((label for word, label in ANSWERS.items() if word in text), "unknown")


@pytest.fixture
def workspace(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    openai_server.responder = label_responder
    config = GEPA_YAML.replace("lm:\n", f"lm:\n  base_url: {openai_server.url}\n")
    config += "    split: {train: 0, val: 1, test: 0}\n"
    return make_workspace(tmp_path, config=config)


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def eval_json(root, *extra: str) -> dict:
    result = run("-C", str(root), "eval", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_scores_each_instance_with_feedback_and_eval_set_identity(workspace, openai_server):
    report = eval_json(workspace)
    (task,) = report["tasks"]
    assert task["task"] == "triage"
    assert task["eval_set"]["name"] == "set" and task["eval_set"]["version"] == "1"
    assert len(task["eval_set"]["sha256"]) == 64
    by_id = {i["id"]: i for i in task["instances"]}
    assert by_id["a1"]["score"] == 1.0 and by_id["a1"]["output"] == "bug"
    assert by_id["a2"]["score"] == 0.0
    assert "Billing." in by_id["a2"]["feedback"] and "billing" in by_id["a2"]["feedback"]
    assert task["mean_score"] == pytest.approx(0.5)
    assert report["usage"]["requests"] == 4 and report["usage"]["cached"] == 0
    assert report["usage"]["prompt_tokens"] > 0
    # the system and user templates were rendered into the request the server saw
    sent = openai_server.requests[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Classify the ticket."}
    assert sent[1]["content"].startswith("Ticket: ")


def test_second_run_is_served_from_cache_and_no_cache_bypasses_it(workspace, openai_server):
    first = eval_json(workspace)
    assert openai_server.attempts == 4
    second = eval_json(workspace)
    assert openai_server.attempts == 4, "a re-run of unchanged work must send zero requests"
    assert second["usage"]["requests"] == 0 and second["usage"]["cached"] == 4
    assert second["tasks"][0]["instances"] == first["tasks"][0]["instances"]
    eval_json(workspace, "--no-cache")
    assert openai_server.attempts == 8
    assert (workspace / ".gepa" / "cache.sqlite3").is_file()


def test_editing_a_template_sends_only_the_changed_work(workspace, openai_server):
    eval_json(workspace)
    (workspace / "prompts/system.j2").write_text("Classify the ticket into one label.")
    eval_json(workspace)
    assert openai_server.attempts == 8


def test_table_output_lists_instances_and_the_mean(workspace):
    result = run("-C", str(workspace), "eval")
    assert result.exit_code == 0, result.output
    assert "triage: set@1 sha256:" in result.output
    assert "a3" in result.output and "feature request" in result.output
    assert "mean 0.500 over 4 instances" in result.output
    assert "usage: 4 requests, 0 cached" in result.output


def test_split_selection(workspace):
    assert eval_json(workspace, "--split", "test")["tasks"][0]["count"] == 0
    assert eval_json(workspace, "--split", "all")["tasks"][0]["count"] == 4


def test_truncated_answers_are_marked(workspace, openai_server):
    openai_server.responder = lambda body: Reply(text="bug because", finish_reason="length")
    report = eval_json(workspace)
    inst = report["tasks"][0]["instances"][0]
    assert inst["truncated"] is True
    assert "cut off at max_tokens" in inst["feedback"]
    assert "[truncated]" in run("-C", str(workspace), "eval").output


def test_endpoint_failure_exits_1_naming_status_and_endpoint_but_not_the_key(workspace, openai_server):
    openai_server.responder = lambda body: Reply(status=401, text=f"Incorrect API key provided: {KEY}")
    result = run("-C", str(workspace), "eval")
    assert result.exit_code == 1
    assert "401" in result.output and openai_server.url in result.output
    assert KEY not in result.output and "Traceback" not in result.output, result.output


def test_pipeline_feeds_each_step_output_to_the_next(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = with_steps("""\
        - name: summarize
          user: prompts/user.j2
          output: summary
        - name: label
          user: prompts/label.j2
        """, GEPA_YAML.replace("lm:\n", f"lm:\n  base_url: {openai_server.url}\n"))
    config += "    split: {train: 0, val: 1, test: 0}\n"
    make_workspace(tmp_path, config=config, files={"prompts/label.j2": "Summary: {{ summary }}\nLabel it."})

    def responder(body: dict) -> str:
        text = body["messages"][-1]["content"]
        if text.startswith("Ticket: "):
            return "SUMMARY " + text.removeprefix("Ticket: ")
        return label_responder({"messages": [{"content": text}]})

    openai_server.responder = responder
    report = eval_json(tmp_path)
    assert report["usage"]["requests"] == 8
    label_calls = [r for r in openai_server.requests if r["messages"][-1]["content"].startswith("Summary: ")]
    assert any("SUMMARY The app crashes on start" in r["messages"][-1]["content"] for r in label_calls)
    assert report["tasks"][0]["mean_score"] == pytest.approx(0.5)


def test_missing_api_key_without_base_url_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    make_workspace(tmp_path, config=GEPA_YAML + "    split: {train: 0, val: 1, test: 0}\n")
    result = run("-C", str(tmp_path), "eval")
    assert result.exit_code == 2
    assert "no API key: the environment variable OPENAI_API_KEY is not set" in result.output


def test_openai_base_url_from_environment_applies(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    openai_server.responder = label_responder
    make_workspace(tmp_path, config=GEPA_YAML + "    split: {train: 0, val: 1, test: 0}\n")
    assert eval_json(tmp_path)["tasks"][0]["mean_score"] == pytest.approx(0.5)
    assert openai_server.headers[0]["authorization"] == f"Bearer {KEY}"


def test_repository_quickstart_task_runs_against_an_endpoint(openai_server, monkeypatch, tmp_path):
    """The README's example task, scored on a scripted endpoint: every ticket reaches the model."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    for name in ("gepa.yaml", "prompts", "evals"):
        src = repo / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    openai_server.responder = lambda body: "billing"
    report = eval_json(tmp_path, "--split", "all")
    task = report["tasks"][0]
    assert task["count"] == 48
    assert 0.1 < task["mean_score"] < 0.3  # about one ticket in five is billing
    assert report["usage"]["cost_usd"] > 0
    assert isinstance(json.dumps(report), str)


def test_ctrl_c_mid_run_keeps_every_answer_already_paid_for(tmp_path, openai_server, monkeypatch):
    """Interrupt a real `gepa-tune` process mid-run: exit 130, and the re-run only asks for the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    rows = [{"id": f"r{n:02d}", "inputs": {"text": f"ticket {n}"}, "expected": "bug"} for n in range(30)]
    config = GEPA_YAML.replace("lm:\n", f"lm:\n  base_url: {openai_server.url}\n").replace(
        "concurrency: 4", "concurrency: 2") + "    split: {train: 0, val: 1, test: 0}\n"
    make_workspace(tmp_path, config=config, instances=rows)
    openai_server.responder = lambda body: "bug"
    openai_server.delay = 0.1
    exe = Path(sys.executable).parent / "gepa-tune"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    # A shell that starts a job in the background makes it ignore SIGINT, and children inherit that:
    # give the CLI the default disposition a terminal would.
    proc = subprocess.Popen([str(exe), "-C", str(tmp_path), "eval"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 20
    while len(openai_server.requests) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, (out[-500:], err)
    assert "interrupted" in err and "Traceback" not in err
    answered = openai_server.attempts
    assert 8 <= answered < 30
    openai_server.delay = 0
    report = eval_json(tmp_path)
    resent = openai_server.attempts - answered
    # at most the requests that were in flight at the interrupt are asked again
    assert resent <= 30 - answered + 2, (answered, resent)
    assert report["usage"]["cached"] >= answered - 2
    assert report["tasks"][0]["mean_score"] == 1.0


def test_progress_line_on_a_terminal_only():
    import io

    from gepa_action.render.terminal import terminal_progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert terminal_progress(io.StringIO()) is None  # piped output stays clean
    screen = Tty()
    show = terminal_progress(screen)
    for done in range(1, 4):
        show("triage", done, 3)
    assert screen.getvalue() == "\r  scored triage: 1/3\r  scored triage: 2/3\r  scored triage: 3/3\n"
