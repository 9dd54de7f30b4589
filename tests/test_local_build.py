"""The portable llama.cpp build: the instruction scan that guards it, and the build's identity.

The last test inspects the llama-cpp-python that is installed (by `gepa-tune install-local`, which .ci/run
runs): it fails when any of its libraries holds AMX tile instructions or AVX-512 ones, the instructions
that crashed the server on a host advertising AMX.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from gepa_action.errors import RunError
from gepa_action.lm import local_build
from gepa_action.lm.local_build import BuildSpec, beyond_baseline, instructions_beyond_baseline

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_x86_toolchain = pytest.mark.skipif(not (X86 and shutil.which("gcc") and shutil.which("objdump")),
                                         reason="needs gcc and objdump on x86-64")

AMX_AND_AVX512 = r"""
#include <immintrin.h>
void tile_config(const void *cfg) { __asm__ volatile("ldtilecfg %0" :: "m"(*(const char (*)[64])cfg)); }
__attribute__((target("avx512f"))) void add16(float *a, const float *b) {
    _mm512_storeu_ps(a, _mm512_add_ps(_mm512_loadu_ps(a), _mm512_loadu_ps(b)));
}
"""
AVX2_ONLY = r"""
#include <immintrin.h>
__attribute__((target("avx2,fma"))) void fma8(float *a, const float *b) {
    _mm256_storeu_ps(a, _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b), _mm256_loadu_ps(a)));
}
"""


def _shared_library(tmp_path: Path, name: str, source: str) -> Path:
    (tmp_path / f"{name}.c").write_text(source)
    library = tmp_path / f"lib{name}.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(tmp_path / f"{name}.c")], check=True)
    return library


@needs_x86_toolchain
def test_the_scan_finds_amx_and_avx512_instructions(tmp_path: Path) -> None:
    found = instructions_beyond_baseline(_shared_library(tmp_path, "hostile", AMX_AND_AVX512))
    assert found.get("ldtilecfg") == 1
    assert found.get("avx512", 0) >= 1


@needs_x86_toolchain
def test_the_scan_passes_an_avx2_library(tmp_path: Path) -> None:
    assert instructions_beyond_baseline(_shared_library(tmp_path, "portable", AVX2_ONLY)) == {}


def test_compiled_features_beyond_the_baseline() -> None:
    features = {"AVX": True, "AVX2": True, "FMA": True, "AVX512": False, "AMX_INT8": True, "AVX512_VNNI": True}
    assert beyond_baseline(features, "x86_64") == ["AMX_INT8", "AVX512_VNNI"]
    assert beyond_baseline({"AVX": True, "AVX2": True, "F16C": True, "AVX512": False}, "x86_64") == []
    assert beyond_baseline({"NEON": True, "SVE": True}, "aarch64") == ["SVE"]


def test_the_build_names_a_baseline_and_never_the_host() -> None:
    x86 = local_build.portable_cmake_args("x86_64")
    assert "-DGGML_NATIVE=OFF" in x86 and "-DGGML_AVX2=ON" in x86
    assert {"-DGGML_AVX512=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF"} <= set(x86)
    assert local_build.portable_cmake_args("aarch64") == ("-DGGML_NATIVE=OFF",)
    # the cache key moves with every input of the build, so a wheel of other flags is never reused
    spec = BuildSpec("0.3.36", x86, "cp311", "x86_64")
    assert spec.key != BuildSpec("0.3.36", (*x86, "-DGGML_AVX512=ON"), "cp311", "x86_64").key
    assert spec.key != BuildSpec("0.3.37", x86, "cp311", "x86_64").key
    assert spec.key.startswith("0.3.36-cp311-x86_64-")


def test_an_installed_stamped_build_is_left_alone(monkeypatch) -> None:
    monkeypatch.setattr(local_build, "installed_stamp", lambda: BuildSpec.here().to_dict())
    monkeypatch.setattr(local_build, "build_wheel", lambda *a, **k: pytest.fail("must not rebuild"))
    assert "is already installed" in local_build.install_local(log=lambda line: None)


@pytest.mark.local_model
def test_the_installed_llama_cpp_is_the_portable_build() -> None:
    """What `gepa-tune install-local` left: its stamp, and no AMX or AVX-512 instruction in any library."""
    libraries = local_build.ggml_libraries()
    if not libraries:
        pytest.fail("llama-cpp-python is not installed: run `gepa-tune install-local` (after the [local] extra)")
    stamp = local_build.installed_stamp()
    assert stamp is not None and stamp["key"] == BuildSpec.here().key, stamp
    assert beyond_baseline(local_build.compiled_features()) == []
    if X86:
        assert any(p.name.startswith("libggml-cpu") for p in libraries)
        found = {p.name: hits for p in libraries if (hits := instructions_beyond_baseline(p))}
        assert found == {}, f"instructions outside the portable baseline: {found}"


def test_an_unwritable_cache_is_one_line_naming_it(monkeypatch) -> None:
    monkeypatch.setattr(local_build, "installed_stamp", lambda: None)
    with pytest.raises(RunError) as info:
        local_build.install_local(log=lambda line: None, environ={"XDG_CACHE_HOME": "/dev/null/cache"})
    message = str(info.value)
    assert message.startswith("install-local could not write /dev/null/cache") and "\n" not in message
