"""A folder made read-only for real, for the tests of read-only disks.

The suite runs as root in CI and here, and root writes straight through `chmod 555`; a read-only bind
mount stops root too, as a read-only volume or a locked-down runner does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` as a read-only bind mount (root can write through chmod 555, not through a ro mount)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a read-only bind mount; as non-root, chmod would be enough but the "
                    "suite runs as root in CI")
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr.decode().strip()}")
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False)
