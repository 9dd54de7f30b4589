"""The bundled local models: chunk assembly, server lifecycle, config wiring, and one real end-to-end run.

Everything but the last test uses small fake chunk files and a fake server script, so it runs in seconds
without the `[local]` extra. The end-to-end test (marker `local_model`) runs the real llama.cpp server
with the real models and needs the extra: `pip install -e '.[test,local]'`.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.openai_server import FakeOpenAI
from fakes.workspace_factory import make_workspace

from gepa_action.cli import main
from gepa_action.config import LMConfig
from gepa_action.errors import InputError, RunError
from gepa_action.lm import local_model
from gepa_action.lm.client import LMClient, Route
from gepa_action.lm.local_model import LocalModel, LocalServer, assemble
from gepa_action.lm.session import check_credentials, models_in_use
from gepa_action.workspace import load_workspace

REPO = Path(__file__).resolve().parent.parent


def chunks(tmp_path: Path, parts: list[bytes]) -> list[Path]:
    paths = []
    for number, data in enumerate(parts, 1):
        path = tmp_path / "pkgs" / f"part{number:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


PARTS = [b"GGUF" + b"a" * 5000, b"b" * 7000, b"c" * 123]
SHA = hashlib.sha256(b"".join(PARTS)).hexdigest()


# -- chunk assembly --------------------------------------------------------------------------------------


def test_assemble_joins_verifies_and_stamps(tmp_path: Path) -> None:
    target = assemble("tiny", chunks(tmp_path, PARTS), SHA, tmp_path / "cache")
    assert target == tmp_path / "cache" / f"tiny-{SHA[:12]}.gguf"
    assert target.read_bytes() == b"".join(PARTS)
    assert json.loads(target.with_name(target.name + ".sha256").read_text()) == {"sha256": SHA, "size": 12127}
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".sha256"]


def test_a_stamped_file_is_reused_without_rehashing(tmp_path: Path) -> None:
    paths = chunks(tmp_path, PARTS)
    target = assemble("tiny", paths, SHA, tmp_path / "cache")
    mtime = target.stat().st_mtime_ns
    paths[1].write_bytes(b"X" * 7000)  # same size, other bytes: a re-hash would notice, the cheap check not
    assert assemble("tiny", paths, SHA, tmp_path / "cache") == target
    assert target.stat().st_mtime_ns == mtime
    assert target.read_bytes() == b"".join(PARTS)


@pytest.mark.parametrize("damage", ["truncated", "no stamp", "stamp of another sha", "stamp garbage"])
def test_a_damaged_cache_file_is_rebuilt_not_used(tmp_path: Path, damage: str) -> None:
    paths = chunks(tmp_path, PARTS)
    target = assemble("tiny", paths, SHA, tmp_path / "cache")
    stamp = target.with_name(target.name + ".sha256")
    if damage == "truncated":  # e.g. a crash of an older version mid-copy, or a full disk
        target.write_bytes(b"".join(PARTS)[:100])
    elif damage == "no stamp":
        stamp.unlink()
    elif damage == "stamp of another sha":
        stamp.write_text(json.dumps({"sha256": "0" * 64, "size": 12127}))
    else:
        stamp.write_text("{not json")
    assert assemble("tiny", paths, SHA, tmp_path / "cache") == target
    assert target.read_bytes() == b"".join(PARTS)
    assert json.loads(stamp.read_text())["sha256"] == SHA


def test_chunks_that_do_not_match_the_sha_are_a_one_line_error_and_leave_nothing(tmp_path: Path) -> None:
    paths = chunks(tmp_path, [PARTS[0], b"corrupt!" + PARTS[1][8:], PARTS[2]])
    with pytest.raises(InputError) as info:
        assemble("tiny", paths, SHA, tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    assert "tiny" in message and SHA[:12] in message and "pip install --force-reinstall" in message
    assert list((tmp_path / "cache").iterdir()) == []  # no half-written or unverified file is left


def test_a_failed_copy_leaves_no_temporary_file(tmp_path: Path) -> None:
    paths = chunks(tmp_path, PARTS)
    paths[2].unlink()
    paths[2].mkdir()  # it has a size, but reading it fails after two chunks were copied
    with pytest.raises(IsADirectoryError):
        assemble("tiny", paths, SHA, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_dir_honours_xdg_cache_home(tmp_path: Path) -> None:
    assert local_model.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "gepa-tune" / "models"
    assert local_model.cache_dir({}) == Path.home() / ".cache" / "gepa-tune" / "models"


class FakeDist:
    """Stands in for an installed distribution: its file list and where files are."""

    def __init__(self, root: Path, package: str, chunk: str | None) -> None:
        self.root = root
        self.files = [importlib.metadata.PackagePath(f"{package}/__init__.py")]
        if chunk:
            self.files.append(importlib.metadata.PackagePath(f"{package}/data/{chunk}"))

    def locate_file(self, path: object) -> Path:
        return self.root / str(path)


def test_chunk_files_are_found_through_the_installed_distributions(tmp_path: Path, monkeypatch) -> None:
    model = LocalModel("tiny", ("tiny-part1", "tiny-part2"), SHA, "test")
    dists = {}
    for number, name in enumerate(model.packages, 1):
        package = name.replace("-", "_")
        (tmp_path / package / "data").mkdir(parents=True)
        (tmp_path / package / "data" / f"part{number:02d}.bin").write_bytes(PARTS[number - 1])
        dists[name] = FakeDist(tmp_path, package, f"part{number:02d}.bin")

    def distribution(name: str) -> FakeDist:
        if name not in dists:
            raise importlib.metadata.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert local_model.chunk_files(model) == [tmp_path / "tiny_part1/data/part01.bin",
                                              tmp_path / "tiny_part2/data/part02.bin"]
    missing = LocalModel("tiny", ("tiny-part1", "tiny-part9"), SHA, "test")
    with pytest.raises(InputError, match=r"no package tiny-part9.*pip install -e '\.\[local\]'"):
        local_model.chunk_files(missing)
    dists["tiny-part2"] = FakeDist(tmp_path, "tiny_part2", None)
    with pytest.raises(InputError, match="should hold one data/partNN.bin chunk, found 0"):
        local_model.chunk_files(model)


# -- the [local] extra ------------------------------------------------------------------------------------


@pytest.fixture
def no_extra(monkeypatch):
    """Pretend llama-cpp-python is not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))


def test_missing_extra_names_the_install_command(no_extra) -> None:
    with pytest.raises(InputError) as info:
        local_model.require_extra()
    assert "pip install -e '.[local]'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("command", [["tune", "--local"], ["eval", "--local"]])
def test_cli_without_the_extra_exits_2_with_one_line(tmp_path: Path, no_extra, monkeypatch, command) -> None:
    make_workspace(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), *command])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "pip install -e '.[local]'" in lines[-1]
    assert "Traceback" not in result.output
    assert not (tmp_path / ".gepa" / "runs").exists() or not any((tmp_path / ".gepa" / "runs").iterdir())


# -- configuration ---------------------------------------------------------------------------------------


def test_provider_local_replaces_every_model_and_needs_no_key(tmp_path: Path, monkeypatch) -> None:
    config = "lm:\n  provider: local\n  reflection_model: gpt-4o\n  prices:\n    gpt-4o: {input: 2.5, output: 10}\n"
    make_workspace(tmp_path, config=config + textwrap.dedent("""\
        tasks:
          - name: triage
            model: gpt-4o-mini
            prompt: {system: prompts/system.j2, user: prompts/user.j2}
            eval: {path: evals/set.jsonl, version: "1"}
            metric: {type: llm_judge, rubric: "is it right", model: gpt-4o}
        """))
    workspace = load_workspace(tmp_path / "gepa.yaml")
    lm = workspace.lm
    assert lm.provider == "local"
    assert lm.task_model == local_model.TASK_MODEL.name
    assert lm.reflection_model == local_model.REFLECTION_MODEL.name
    assert workspace.tasks[0].model == local_model.TASK_MODEL.name
    assert workspace.tasks[0].metric.model == local_model.JUDGE_MODEL.name  # type: ignore[attr-defined]
    assert all(p.input == 0 and p.output == 0 for p in lm.prices.values())
    assert set(lm.prices) >= {lm.task_model, lm.reflection_model}
    assert lm.reflection_max_tokens <= local_model.LOCAL_REFLECTION_MAX_TOKENS
    assert workspace.warnings == []
    names = [m.name for m in models_in_use(workspace, reflection=False)]
    assert names == sorted({local_model.TASK_MODEL.name, local_model.JUDGE_MODEL.name})
    monkeypatch.setattr(local_model, "check_ready", lambda config, environ=None: None)
    check_credentials(lm, {})  # no OPENAI_API_KEY, no base_url: fine


def test_unknown_provider_is_an_error_at_its_line(tmp_path: Path) -> None:
    make_workspace(tmp_path, config="lm:\n  task_model: m\n  provider: anthropic\n" + textwrap.dedent("""\
        tasks:
          - name: triage
            prompt: {system: prompts/system.j2, user: prompts/user.j2}
            eval: {path: evals/set.jsonl, version: "1"}
            metric: exact
        """))
    with pytest.raises(InputError) as info:
        load_workspace(tmp_path / "gepa.yaml")
    assert str(info.value).startswith("gepa.yaml:3: lm.provider: 'anthropic' is not a provider; use openai")


def test_default_provider_is_openai_and_still_needs_a_key(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    lm = load_workspace(tmp_path / "gepa.yaml").lm
    assert lm.provider == "openai" and lm.task_model == "test-model"
    with pytest.raises(InputError, match="no API key"):
        check_credentials(lm, {})


# -- routing through the LM client ----------------------------------------------------------------------


def test_routed_models_go_to_their_server_without_a_key_and_cache_by_weights(tmp_path: Path) -> None:
    from gepa_action.cache import ResponseCache

    config = LMConfig(task_model="small", max_retries=0, timeout=5)
    messages = [{"role": "user", "content": "hi"}]

    async def ask(server: FakeOpenAI, cache: ResponseCache) -> tuple[str, bool]:
        routes = {"small": Route(server.url, "local:abc123")}
        async with LMClient(config, api_key=None, base_url="http://127.0.0.1:9/v1", cache=cache,
                            routes=routes) as lm:
            answer = await lm.complete("small", messages)
        return answer.text, answer.cached

    cache = ResponseCache(tmp_path / "cache.sqlite3")
    try:
        with FakeOpenAI() as first:
            text, cached = asyncio.run(ask(first, cache))
            assert not cached and len(first.requests) == 1
            assert first.requests[0]["model"] == "small"
        with FakeOpenAI() as second:  # another port next run, same weights: a cache hit
            assert asyncio.run(ask(second, cache)) == (text, True)
            assert second.requests == []
    finally:
        cache.close()


# -- server lifecycle (a fake server script stands in for llama.cpp) --------------------------------------

FAKE_SERVER = """\
import http.server, json, os, sys, signal, time
args = sys.argv[1:]
mode = os.environ.get("FAKE_MODE", "ok")
if mode == "crash":
    print("error loading model: bad magic", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
port = int(args[args.index("--port") + 1])
completions = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": args[args.index("--model_alias") + 1]}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        # a build that cannot run on this CPU: the first (or second) matrix product kills the process
        global completions
        completions += 1
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if (mode == "segv-first" and completions == 1) or (mode == "segv-later" and completions == 2):
            print("llama_model_load: loaded meta data", file=sys.stderr)
            print("ggml_backend_amx_mul_mat: tile config", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        text = os.environ.get("FAKE_ANSWER", "bug")
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 1}, "model": request["model"]}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


class FakeLlamaServer(LocalServer):
    """LocalServer with the fake script instead of `python -m llama_cpp.server`."""

    script: Path

    def command(self) -> list[str]:
        return [sys.executable, str(self.script), *super().command()[3:]]


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch):
    script = tmp_path / "fake_llama_server.py"
    script.write_text(FAKE_SERVER)
    monkeypatch.setattr(FakeLlamaServer, "script", script, raising=False)

    def make(mode: str = "ok", **options) -> FakeLlamaServer:
        monkeypatch.setenv("FAKE_MODE", mode)
        return FakeLlamaServer(tmp_path / "model.gguf", "tiny", **options)

    return make


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_server_starts_answers_and_stops(fake_server) -> None:
    with fake_server() as server:
        pid = server.process.pid
        assert alive(pid)
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    assert not alive(pid)
    assert server.process is None


def test_a_server_that_dies_while_starting_reports_its_stderr(fake_server) -> None:
    with pytest.raises(RunError, match="exited with code 3 while starting: error loading model: bad magic"):
        fake_server("crash").start()


def test_a_server_that_crashes_on_its_first_completion_fails_the_readiness_check(fake_server) -> None:
    """A build that faults on this CPU is caught before the run spends anything, as a crash, with advice."""
    server = fake_server("segv-first")
    started = time.monotonic()
    with pytest.raises(RunError) as info:
        server.start()
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert message.startswith("local model server for tiny crashed on its readiness check (one tiny completion): "
                              "killed by signal SIGSEGV; last output: ")
    assert "ggml_backend_amx_mul_mat" in message and "gepa-tune install-local --force" in message
    assert "\n" not in message and server.process is None


def test_a_server_that_never_answers_times_out_and_is_stopped(fake_server) -> None:
    server = fake_server("hang", startup_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(RunError, match="did not answer within 1 s"):
        server.start()
    assert time.monotonic() - started < 10
    assert server.process is None


def test_a_server_ignoring_sigterm_is_killed_after_the_grace_period(fake_server) -> None:
    server = fake_server("stubborn", grace=0.5).start()
    pid = server.process.pid
    started = time.monotonic()
    server.stop()
    assert not alive(pid)
    assert 0.4 < time.monotonic() - started < 5


@pytest.fixture
def local_fakes(fake_server, monkeypatch, tmp_path: Path):
    """`--local` served by the fake server script in-process: no extra, no model files, no llama.cpp."""
    fake_server()  # writes the script and sets FAKE_MODE=ok
    monkeypatch.setattr(local_model, "LocalServer", FakeLlamaServer)
    monkeypatch.setattr(local_model, "require_extra", lambda: None)
    monkeypatch.setattr(local_model, "check_ready", lambda config, environ=None: None)
    monkeypatch.setattr(local_model, "model_file", lambda model, directory=None: tmp_path / "model.gguf")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    workspace = tmp_path / "ws"
    rows = [{"id": f"t{i:02d}", "inputs": {"text": f"ticket {i}"}, "expected": "billing" if i % 2 else "bug",
             "split": ("train", "val", "test")[i % 3]} for i in range(12)]
    make_workspace(workspace, instances=rows)
    return workspace


def _run_meta_and_events(workspace: Path) -> tuple[dict, list[dict]]:
    run_dir = next((workspace / ".gepa" / "runs").iterdir())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "run.json").read_text()), events


@pytest.mark.parametrize(("mode", "when"), [("segv-first", "on its readiness check (one tiny completion)"),
                                            ("segv-later", "during the run")])
def test_a_crashed_server_is_reported_as_a_crash_in_seconds_and_in_the_run_folder(local_fakes, monkeypatch,
                                                                                mode: str, when: str) -> None:
    monkeypatch.setenv("FAKE_MODE", mode)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["-C", str(local_fakes), "tune", "--local", "--budget", "20"])
    assert time.monotonic() - started < 20  # no seven retries against a dead endpoint
    assert result.exit_code == 1, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert f"crashed {when}: killed by signal SIGSEGV" in error[0]
    assert "qwen2.5-coder" in error[0] and "ggml_backend_amx_mul_mat" in error[0]
    assert "gepa-tune install-local --force" in error[0]
    meta, events = _run_meta_and_events(local_fakes)
    assert meta["status"].startswith("failed: ") and "killed by signal SIGSEGV" in meta["status"]
    assert any(e["event"] == "error" and "killed by signal SIGSEGV" in e["message"] for e in events)


def test_a_local_run_resumes_on_the_local_models_without_repeating_local(local_fakes, monkeypatch) -> None:
    # every answer, the reflection's too: a template for the user message (valid there, not for the system one)
    monkeypatch.setenv("FAKE_ANSWER",
                       "Diagnosis: no labels.\n```jinja\nTicket: {{ text }}\nAnswer bug or billing.\n```")
    runner = CliRunner()
    first = runner.invoke(main, ["-C", str(local_fakes), "tune", "--local", "--budget", "20", "--json"])
    assert first.exit_code == 0, first.output
    run_id = json.loads(first.stdout)["run_id"]
    again = runner.invoke(main, ["-C", str(local_fakes), "tune", "--resume", run_id, "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["run_id"] == run_id
    assert report["tasks"][0]["models"]["task"] == local_model.TASK_MODEL.name


DRIVER = """\
import sys, time
sys.path[:0] = [{tests!r}, {repo!r}]
from pathlib import Path
from gepa_action.lm import local_model
from test_local_model import FakeLlamaServer
FakeLlamaServer.script = Path({script!r})
local_model.LocalServer = FakeLlamaServer
local_model.require_extra = lambda: None
local_model.model_file = lambda model, directory=None: Path("/nonexistent.gguf")
try:
    with local_model.serve([local_model.QWEN_05B, local_model.QWEN_15B]) as urls:
        print("ready", flush=True)
        time.sleep(60)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_server_outlives_its_parent(tmp_path: Path, fake_server, sig: int) -> None:
    """Ctrl-C and SIGTERM stop the servers through the context manager; SIGKILL through the parent-death
    signal. A marker in the environment finds every process the run started."""
    fake_server()  # writes the script and sets FAKE_MODE=ok
    marker = f"gepa-test-{uuid.uuid4().hex}"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(Path(__file__).parent), repo=str(REPO),
                                    script=str(tmp_path / "fake_llama_server.py")))
    env = {**os.environ, "GEPA_TEST_MARKER": marker}
    parent = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        servers = marked(marker) - {parent.pid}
        assert len(servers) == 2
        parent.send_signal(sig)
        code = parent.wait(15)
        assert code == (130 if sig != signal.SIGKILL else -signal.SIGKILL)
        deadline = time.monotonic() + 10
        while marked(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marked(marker) == set()
    finally:
        if parent.poll() is None:
            parent.kill()


def marked(marker: str) -> set[int]:
    """Live processes whose environment carries `marker`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes() and alive(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


# -- the real thing ---------------------------------------------------------------------------------------


@pytest.mark.local_model
def test_tune_local_end_to_end_on_the_example_workspace(tmp_path: Path) -> None:
    """A small `gepa-tune tune --local` of the repository's own example task with the real models: the
    run finishes, writes its report, uses both models, and leaves no server behind."""
    if importlib.util.find_spec("llama_cpp") is None:  # CI installs the extra, so there it must run
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "the local_model tests need the [local] extra and `gepa-tune install-local`")
    for name in ("gepa.yaml", "prompts", "evals"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    config = tmp_path / "gepa.yaml"
    config.write_text(config.read_text().replace("max_cost_usd: 1.00", "max_cost_usd: 1.00\n      max_minutes: 1.5"))
    marker = f"gepa-test-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["GEPA_TEST_MARKER"] = marker
    gepa_tune = Path(sys.executable).with_name("gepa-tune")
    started = time.monotonic()
    result = subprocess.run([str(gepa_tune), "-C", str(tmp_path), "tune", "--local", "--budget", "34"],
                            capture_output=True, text=True, env=env, timeout=600)
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "report: .gepa/runs/" in result.stdout
    report_json = next((tmp_path / ".gepa" / "runs").glob("*/report.json"))
    report = json.loads(report_json.read_text())
    assert report_json.with_name("report.md").is_file()
    task = report["tasks"][0]
    assert report["status"] == "finished" and task["status"] == "finished"
    assert task["usage"]["metric_calls"] <= 34 and task["usage"]["test_calls"] in (15, 30)  # 15: best is the seed
    assert task["usage"]["reflection_calls"] >= 1
    assert task["usage"]["cost_usd"] == 0
    assert marked(marker) == set(), "a local model server outlived the run"
    print(f"tune --local: {wall:.0f} s, {task['usage']['metric_calls']} metric calls, "
          f"val {task['scores']['val']['seed']:.3f} -> {task['scores']['val']['best']:.3f}")
