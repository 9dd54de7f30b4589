"""Workspace paths confined to the workspace root, for reading and for writing.

A repository is untrusted input: a committed symlink `prompts/x.j2 -> /proc/self/environ` or an eval path
`../../secrets.jsonl` would otherwise send files from outside the repository to a model and into a PR.
Checking the path *text* is not enough, so every path is resolved (symlinks followed) and must land
inside the resolved workspace root. Reads also refuse what is not a regular file (a FIFO blocks for
ever, a device never ends) and files too large to be a prompt, an eval set or a config.

Writes (`tune --write`, `report --write`, run files) go through `write_inside`, which confines the
target the same way and replaces it atomically, so a crash never leaves half a template behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import GepaError, InputError, RunError

#: Upper bounds on what is read into memory. A prompt, config or lock past these is a mistake or an attack.
MAX_TEXT_BYTES = 4 * 1024 * 1024
MAX_EVAL_BYTES = 512 * 1024 * 1024

_OUTSIDE_HINT = "keep it inside the repository and refer to it by a path relative to gepa.yaml"


def real_root(root: Path) -> Path:
    """The workspace root with every symlink resolved: the one place paths are compared against."""
    return Path(os.path.realpath(root))


def confine(root: Path, path: str | Path, display: str | None = None, *, what: str = "file") -> Path:
    """`path` (relative to `root`, or absolute) resolved, if it stays inside `root`; else an InputError.

    The error names the file as the user wrote it, never where a symlink points (that could be a
    secret's path, and it is not the user's to fix).
    """
    name = display if display is not None else str(path)
    base = real_root(root)
    candidate = Path(path) if Path(path).is_absolute() else base / path
    if "\x00" in str(candidate):
        raise InputError(name, f"the {what} path contains a NUL character", hint="fix the path")
    try:
        resolved = Path(os.path.realpath(candidate))
    except (OSError, RuntimeError, ValueError):  # a symlink loop
        raise InputError(name, f"the {what} path cannot be resolved (a symlink loop?)",
                         hint="replace the symlink by a regular file") from None
    if resolved != base and base not in resolved.parents:
        how = "is a symlink that leads" if _has_symlink(base, candidate) else "lies"
        raise InputError(name, f"the {what} {how} outside the workspace", hint=_OUTSIDE_HINT)
    return resolved


def _has_symlink(base: Path, candidate: Path) -> bool:
    """Whether any existing component of `candidate` is a symlink (for an accurate message)."""
    probe = candidate
    while probe not in (probe.parent, base):
        with contextlib.suppress(OSError):
            if probe.is_symlink():
                return True
        probe = probe.parent
    return False


def read_bytes_inside(root: Path, path: str | Path, display: str | None = None, *, what: str = "file",
                      max_bytes: int = MAX_TEXT_BYTES, missing_hint: str | None = None) -> bytes:
    """The bytes of a regular file inside the workspace, at most `max_bytes` of them.

    The file is opened without blocking and checked with fstat *after* opening, so a FIFO or device
    cannot hang the read and a file swapped between the check and the read is still the one checked.
    """
    name = display if display is not None else str(path)
    resolved = confine(root, path, name, what=what)
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputError(name, f"{what} not found", hint=missing_hint or "create it or fix the path") from None
    except IsADirectoryError:
        raise InputError(name, f"the {what} is a folder, not a file", hint="point at a file") from None
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}", hint="check the path and permissions") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(name, f"the {what} is a folder, not a file", hint="point at a file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(name, f"the {what} is not a regular file (a pipe, socket or device)",
                             hint="replace it by a regular file")
        if info.st_size > max_bytes:
            raise InputError(name, f"the {what} is {info.st_size:,} bytes, over the limit of {max_bytes:,}",
                             hint="make it smaller")
        chunks = []
        size = 0
        with os.fdopen(fd, "rb", closefd=False) as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:  # grew while being read
                    raise InputError(name, f"the {what} is over the limit of {max_bytes:,} bytes",
                                     hint="make it smaller")
                chunks.append(chunk)
        return b"".join(chunks)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(name, f"cannot read: {exc.strerror or exc}", hint="check the path and permissions") from None
    finally:
        os.close(fd)


def line_of_byte(data: bytes, offset: int) -> int:
    """The 1-based line holding byte `offset` (a decode error gives a byte offset; people want a line)."""
    return data.count(b"\n", 0, offset) + 1


def read_text_inside(root: Path, path: str | Path, display: str | None = None, *, what: str = "file",
                     max_bytes: int = MAX_TEXT_BYTES, missing_hint: str | None = None) -> str:
    """`read_bytes_inside`, decoded as UTF-8 (a byte-order mark dropped); bad bytes name their line."""
    name = display if display is not None else str(path)
    data = read_bytes_inside(root, path, name, what=what, max_bytes=max_bytes, missing_hint=missing_hint)
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(name, f"not UTF-8 text (byte {exc.start} of the line is invalid)",
                         line=line_of_byte(data, exc.start), hint="save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as read_text did


def write_inside(root: Path, path: str | Path, text: str, display: str | None = None) -> Path:
    """Write `text` to `path` inside the workspace atomically; refuse a target that resolves outside.

    A symlink inside the workspace that points at another file inside it is written through (the
    user's own layout); one that leads outside is refused before anything is written. The new
    content goes to a uniquely named temporary file beside the target and is renamed over it, so
    two writers never share a temporary name and a reader never sees half a file. The target's
    permission bits are kept.
    """
    name = display if display is not None else str(path)
    target = confine(root, path, name)
    if target.exists() and not target.is_file():
        raise InputError(name, "cannot write: it is not a regular file", hint="remove it or fix the path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise RunError(f"{name}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise RunError(f"{name}: cannot write: {exc.strerror or exc}; the file was left as it was") from None
        raise
    return target


@contextlib.contextmanager
def reading(name: str, what: str = "file") -> Iterator[None]:
    """Turn anything unforeseen that reading a user's file raises into one line naming that file.

    The specific checks (syntax, types, limits) give better messages and come first; this guard is for
    the input nobody thought of, which must still end as `FILE: ...`, exit 2, and no traceback.
    """
    try:
        yield
    except GepaError:
        raise
    except RecursionError:
        raise InputError(name, f"the {what} is nested too deeply to read", hint="flatten its structure") from None
    except MemoryError:
        raise InputError(name, f"the {what} is too large to read into memory", hint="make it smaller") from None
    except (OSError, ValueError, TypeError, LookupError, ArithmeticError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(name, f"cannot read the {what}: {type(exc).__name__}: {detail}",
                         hint="check the file's content against the README") from None
