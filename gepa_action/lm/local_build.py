"""A portable build of llama.cpp's server for the bundled local models (`gepa-tune install-local`).

Why this exists instead of a plain `llama-cpp-python` requirement:

* llama-cpp-python compiles ggml from source, and by default (`GGML_NATIVE=ON`) for every instruction the
  *build* host advertises. On a host whose CPU lists AMX, the library then executes AMX tile instructions
  (`ldtilecfg`), which fault with a general protection error where the kernel has not granted the process
  AMX state (seen on a Xeon VM): the server dies on its first completion. Turning the AMX options off is
  not enough, since `-march=native` still enables them. A native build is also wrong for any other
  machine that receives it (a wheel cache, a container image).
* So the build turns native detection off and names a baseline: on x86-64 AVX, AVX2, FMA, F16C and BMI2
  (x86-64-v3, what every x86 server CPU since about 2015 runs), on aarch64 the compiler's armv8-a default.
  The cost is measured in the README (tokens/s of the portable build against a native one).
* Why not runtime dispatch (`GGML_CPU_ALL_VARIANTS`)? It picks a variant by CPUID, and CPUID is exactly
  what lied on the failing host (it advertises AMX the process may not use). Why not a prebuilt wheel?
  The registry has no llama-cpp-python wheel for Linux.
* pip caches a wheel built from an sdist under the sdist's identity, whatever `CMAKE_ARGS` said, so a
  machine that once built natively would silently reuse that wheel. The build here runs with pip's cache
  off, into a folder of our own keyed by version, flags, Python tag and machine; the file it leaves there
  makes a re-install take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import RunError

#: The llama-cpp-python release the local provider is tested with.
LLAMA_CPP_VERSION = "0.3.36"
#: The x86-64 baseline: x86-64-v3's vector and bit-manipulation set; nothing of AVX-512 or AMX.
X86_64_ARGS = ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
               "-DGGML_BMI2=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF",
               "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF", "-DGGML_AMX_TILE=OFF",
               "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")
#: Elsewhere (aarch64 above all): no -march/-mcpu of the host's, so the compiler's generic default.
GENERIC_ARGS = ("-DGGML_NATIVE=OFF",)
#: Written into the installed llama_cpp package: which build this is, so a re-run can tell.
STAMP_NAME = ".gepa-tune-build.json"

#: AMX tile instructions (any of them faults where the kernel has not enabled AMX state).
AMX_MNEMONICS = ("ldtilecfg", "sttilecfg", "tileloadd", "tileloaddt1", "tilestored", "tilerelease", "tilezero",
                 "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tdpfp16ps")
#: An AVX-512 instruction names a zmm register or writes under a k mask.
_AVX512_OPERAND = re.compile(r"%zmm\d+|\{%k[1-7]\}")
_MNEMONIC = re.compile(r"^\s*[0-9a-f]+:\s+(?P<mnemonic>[a-z][a-z0-9.]*)\s*(?P<operands>.*)$")


def machine() -> str:
    return platform.machine().lower()


def portable_cmake_args(arch: str | None = None) -> tuple[str, ...]:
    """The CMake options of the portable build for `arch` (this machine's by default)."""
    arch = arch or machine()
    return X86_64_ARGS if arch in ("x86_64", "amd64") else GENERIC_ARGS


@dataclass(frozen=True)
class BuildSpec:
    """One portable build: what is compiled, with which options, for which interpreter and machine."""

    version: str
    cmake_args: tuple[str, ...]
    python_tag: str
    arch: str

    @classmethod
    def here(cls) -> BuildSpec:
        tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
        return cls(LLAMA_CPP_VERSION, portable_cmake_args(), tag, machine())

    @property
    def key(self) -> str:
        digest = hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:12]
        return f"{self.version}-{self.python_tag}-{self.arch}-{digest}"

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "cmake_args": list(self.cmake_args), "python_tag": self.python_tag,
                "arch": self.arch, "key": self.key}


def user_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """gepa-tune's per-user cache: `$XDG_CACHE_HOME/gepa-tune`, else `~/.cache/gepa-tune` (model files, wheels)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gepa-tune"


def wheel_cache(environ: Mapping[str, str] | None = None) -> Path:
    """Where portable wheels are kept, one folder per build key."""
    return user_cache_root(environ) / "llama-cpp"


def cached_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    return wheels[0] if len(wheels) == 1 else None


def build_wheel(spec: BuildSpec, folder: Path, *, log: Callable[[str], None], jobs: int | None = None) -> Path:
    """Compile llama-cpp-python from its sdist with the portable options into `folder`; return the wheel.

    The wheel is built in a temporary sibling folder and renamed into place only when pip succeeded, so a
    cancelled build never leaves a wheel that a later run would trust."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": " ".join(spec.cmake_args), "FORCE_CMAKE": "1",
           "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 1)}
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
               "--no-binary", "llama-cpp-python", "--disable-pip-version-check", "--quiet",
               f"llama-cpp-python=={spec.version}"]
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        log(f"building llama-cpp-python {spec.version} from source with {' '.join(spec.cmake_args)} "
            f"(a few minutes on 2 cores)")
        done = subprocess.run([*command, "--wheel-dir", str(staging)], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split())[-400:]
            raise RunError(f"building llama-cpp-python {spec.version} failed (pip exit {done.returncode}): {tail}; "
                           "it needs a C/C++ compiler and cmake (Debian: apt-get install build-essential cmake)")
        wheel = cached_wheel(staging)
        if wheel is None:
            raise RunError(f"building llama-cpp-python left no single wheel in {staging}")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        return folder / wheel.name
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def installed_package_dir() -> Path | None:
    """The installed `llama_cpp` package folder (found without importing it), or None."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_stamp() -> dict[str, object] | None:
    folder = installed_package_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def install_wheel(wheel: Path, spec: BuildSpec) -> None:
    """Install `wheel` over whatever llama-cpp-python is there (deps come from the [local] extra), then stamp."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", str(wheel)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise RunError(f"installing {wheel.name} failed (pip exit {done.returncode}): {tail}")
    folder = installed_package_dir()
    if folder is None:
        raise RunError(f"installed {wheel.name}, but Python cannot find the llama_cpp package")
    (folder / STAMP_NAME).write_text(json.dumps({**spec.to_dict(), "wheel": wheel.name}), encoding="utf-8")


def compiled_features(python: str | None = None) -> dict[str, bool]:
    """The CPU features the installed ggml was compiled for, as llama.cpp reports them (`AVX2 = 1 | ...`).

    Read in a child interpreter: loading the library is harmless, but it should not happen in a process
    that may never need it."""
    code = "import llama_cpp, sys; sys.stdout.write(llama_cpp.llama_print_system_info().decode('utf-8', 'replace'))"
    done = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=120)
    if done.returncode != 0:
        return {}
    return {name: value == "1" for name, value in re.findall(r"([A-Z][A-Z0-9_]*) = (\d)", done.stdout)}


def beyond_baseline(features: Mapping[str, bool], arch: str | None = None) -> list[str]:
    """Compiled-in features outside the portable baseline (x86-64: anything AVX-512, AMX or AVX-VNNI)."""
    if (arch or machine()) not in ("x86_64", "amd64"):
        return sorted(k for k, on in features.items() if on and k in ("SVE", "SME", "MATMUL_INT8"))
    return sorted(k for k, on in features.items() if on and k.startswith(("AVX512", "AMX", "AVX_VNNI")))


def ggml_libraries(folder: Path | None = None) -> list[Path]:
    """The shared libraries shipped in the installed llama_cpp package (libggml*, libllama, ...)."""
    folder = folder or installed_package_dir()
    if folder is None:
        return []
    found = {p.resolve() for p in folder.rglob("*.so*") if p.is_file()}  # libx.so -> libx.so.0 -> the file
    return sorted(found)


def instructions_beyond_baseline(library: Path) -> dict[str, int]:
    """Disassemble `library` and count AMX tile instructions and AVX-512 ones (zmm registers, k masks).

    Needs binutils' objdump. A portable x86-64 build has none of either."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise RunError("objdump (binutils) is needed to inspect the built libraries: apt-get install binutils")
    found: dict[str, int] = {}
    with subprocess.Popen([objdump, "-d", "--no-show-raw-insn", str(library)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _MNEMONIC.match(line)
            if match is None:
                continue
            mnemonic = match.group("mnemonic")
            if mnemonic in AMX_MNEMONICS:
                found[mnemonic] = found.get(mnemonic, 0) + 1
            elif _AVX512_OPERAND.search(match.group("operands")):
                found["avx512"] = found.get("avx512", 0) + 1
    return found


def install_local(*, force: bool = False, log: Callable[[str], None], jobs: int | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """Make sure the portable llama-cpp-python is installed; return what was done, in one line.

    Already installed and stamped with this build: nothing. A wheel of this build in the cache: install it
    (seconds). Otherwise compile it first (minutes). `force` recompiles in any case. A folder that cannot
    be written (a read-only cache or site-packages) is one line naming it, not a traceback."""
    try:
        return _install_local(force=force, log=log, jobs=jobs, environ=environ)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise RunError(f"install-local could not write{where}: {exc.strerror or exc}; make the folder writable, "
                       "or point XDG_CACHE_HOME at one that is") from None


def _install_local(*, force: bool, log: Callable[[str], None], jobs: int | None,
                   environ: Mapping[str, str] | None) -> str:
    spec = BuildSpec.here()
    stamp = installed_stamp()
    if not force and stamp is not None and stamp.get("key") == spec.key:
        return f"llama-cpp-python {spec.version} (portable build {spec.key}) is already installed"
    folder = wheel_cache(environ) / spec.key
    wheel = None if force else cached_wheel(folder)
    how = "from the cached portable wheel"
    if wheel is None:
        wheel = build_wheel(spec, folder, log=log, jobs=jobs)
        how = "built from source"
    install_wheel(wheel, spec)
    extra = beyond_baseline(compiled_features(), spec.arch)
    if extra:
        with contextlib.suppress(OSError):
            (installed_package_dir() or Path("/nonexistent")).joinpath(STAMP_NAME).unlink()
        raise RunError(f"the llama-cpp-python just installed was compiled for {', '.join(extra)}, outside the "
                       "portable baseline; rebuild with `gepa-tune install-local --force`")
    return f"installed llama-cpp-python {spec.version}, portable build {spec.key}, {how}"
