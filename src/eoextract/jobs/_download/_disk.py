"""The disk side of a download: where temporary files live, how written bytes reach the
disk, and how a verified file takes its final place.

:func:`place_file` renames a verified temporary file into the output folder, refusing
paths that would leave it; :class:`EarlyWriteback` starts the kernel's writeback while a
file is still being received, so that the final :func:`fdatasync_file` finds little left
to flush; :func:`remove_stale_temp_files` clears what interrupted runs left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eoextract._util.files import atomic_path, fsync_dir
from eoextract._util.hrefs import ensure_inside
from eoextract.errors import DownloadError

logger = logging.getLogger(__name__)

#: Folder inside the output folder that holds temporary files and download records.
STATE_DIR = ".eoextract"
#: Prefix of the temporary files written while downloading.
TEMP_PREFIX = ".eoextract-dl-"


def _libc_sync_file_range() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = _libc_sync_file_range()


class EarlyWriteback:
    """Starts the kernel's writeback of a file while it is still being written.

    Every ``step`` bytes the range written since the last call is handed to Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which returns at once; the disk then
    writes while the download goes on, and the final ``fdatasync`` finds little left to
    flush. Elsewhere (no ``sync_file_range``) it does nothing.
    """

    def __init__(self, fh: Any, step: int = 4 << 20, *, enabled: bool = True) -> None:
        self.fh = fh
        self.step = step
        #: Bytes handed to the disk so far.
        self.started = 0
        self.enabled = enabled and _sync_file_range is not None

    def advance(self, offset: int) -> None:
        """Hand what was written up to ``offset`` to the disk, once ``step`` bytes piled up."""
        if offset - self.started < self.step or not self.enabled:
            return
        self.fh.flush()
        if _sync_file_range(self.fh.fileno(), ctypes.c_int64(self.started),
                            ctypes.c_int64(offset - self.started), _SYNC_FILE_RANGE_WRITE):
            # not supported here (a pipe, some network file systems): the final flush does it all
            logger.debug("sync_file_range failed (errno %d); writing back at the end", ctypes.get_errno())
            self.enabled = False
            return
        self.started = offset


def _fdatasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def fdatasync_file(path: Path) -> None:
    """Flush a file's content to disk (``fdatasync``, or ``fsync`` where there is none)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _fdatasync(fd)
    except OSError as exc:  # e.g. a full disk found only now (delayed allocation): say which file
        if not exc.filename:
            exc.filename = str(path)
        raise
    finally:
        os.close(fd)


def place_file(tmp_path: Path, final_path: Path, root: Path, *, sync_dir: bool = True) -> Path:
    """Move a verified temporary file to its final path inside ``root``, atomically.

    Args:
        tmp_path: The file to move (already flushed to disk).
        final_path: Where it goes; a relative path is taken relative to ``root``.
        root: The output folder the file must stay in.
        sync_dir: Flush the destination folder so the rename survives a crash; a
            caller placing many files may do that once per folder instead.

    Returns:
        The resolved final path.

    Raises:
        UnsafeAssetPath: If ``final_path`` contains ``..``, resolves outside ``root``
            (also through a symbolic link) or is ``root`` itself.
        DownloadError: If ``final_path`` is an existing folder.
    """
    final = ensure_inside(final_path, root)
    if final.is_dir():
        raise DownloadError(f"Cannot place a file at {final}: it is a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    # Check again: a link may have appeared while the folders were created.
    final = ensure_inside(final, root)
    try:
        os.replace(tmp_path, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # another file system: copy next to the target, flush, then rename over it
        with atomic_path(final, prefix=TEMP_PREFIX, fsync=False) as staging:
            with open(tmp_path, "rb") as src, open(staging, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        Path(tmp_path).unlink(missing_ok=True)
    if sync_dir:
        fsync_dir(final.parent)
    return final


def remove_stale_temp_files(folder: Path, older_than: float = 24 * 3600.0, *, prefix: str = TEMP_PREFIX) -> int:
    """Remove temporary download files left in ``folder`` by interrupted runs.

    Args:
        folder: The temporary folder (by default ``<root>/.eoextract/tmp``).
        older_than: Only files not modified for this many seconds are removed, so
            downloads still running elsewhere are left alone.
        prefix: Name prefix of the temporary files.

    Returns:
        How many files were removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    for path in Path(folder).glob(prefix + "*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
