"""Atomic file writes: a temporary file in the target's folder, fsync, rename, directory fsync.

A crash at any point leaves either the previous file or the new one, never a torn one.
Files are created with the permissions ``open()`` gives (``0666`` less the umask), not
the ``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def temp_file(folder: str | os.PathLike[str], *, prefix: str = "tmp", suffix: str = ".tmp"
              ) -> tuple[int, Path]:
    """A new, uniquely named file in ``folder`` as ``(open descriptor, path)``.

    As :func:`tempfile.mkstemp`, but with the mode a plain ``open()`` would give
    (``0666 & ~umask``), so the file keeps it once renamed into place.
    """
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except (AttributeError, OSError):  # pragma: no cover - no fchmod (Windows)
        pass
    return fd, Path(name)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the creation, renaming or removal of entries in ``folder`` durable.

    Does nothing where the OS cannot open a folder for that (Windows).
    """
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, prefix: str | None = None,
                suffix: str = ".tmp", fsync: bool = True) -> Iterator[Path]:
    """A temporary path next to ``target``, renamed over it when the block succeeds.

    Whatever the block writes to the path is fsynced before the rename (unless ``fsync``
    is false); on an error the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(target.parent, prefix=prefix or f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "wb", *, prefix: str | None = None,
                suffix: str = ".tmp", fsync: bool = True, **open_kw: Any) -> Iterator[IO[Any]]:
    """An open file that replaces ``target`` atomically when the block succeeds."""
    with atomic_path(target, prefix=prefix, suffix=suffix, fsync=False) as tmp:
        with open(tmp, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
    if fsync:
        fsync_dir(Path(target).parent)


def atomic_write(target: str | os.PathLike[str], data: bytes | str, *, fsync: bool = True) -> None:
    """Replace ``target`` with ``data`` (text is written as UTF-8) atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(target, "wb", fsync=fsync) as fh:
        fh.write(payload)


def atomic_write_json(target: str | os.PathLike[str], document: Any, *, indent: bool = True,
                      fsync: bool = True) -> None:
    """Replace ``target`` with ``document`` as JSON atomically (UTF-8; dates as ISO 8601)."""
    option = orjson.OPT_INDENT_2 if indent else 0
    atomic_write(target, orjson.dumps(document, option=option | orjson.OPT_SERIALIZE_NUMPY),
                 fsync=fsync)


def replace_folder(built: Path, final: Path) -> None:
    """Rename the folder ``built`` to ``final``; a folder already at ``final`` is renamed
    aside first, put back if the second rename fails, and removed once ``built`` is in place."""
    if not final.exists():
        built.rename(final)
        return
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    final.rename(old)
    try:
        built.rename(final)
    except BaseException:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)
