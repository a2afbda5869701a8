"""Hive partitions replaced one at a time: a merge writes its partitions to a staging
folder beside the dataset, then moves each over the old one (the old one into the staging
folder first, under a hidden name, then the new one in); the staging folder, old
partitions and all, is deleted afterwards. Partitions the merge did not write stay as they
are; a crash between the two moves leaves the old partition in the staging folder, and the
next merge puts it back before doing anything else."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from eoextract._util.files import fsync_dir

_STAGING, _OLD = ".staging-", ".old-"
_ASIDE = ".replaced-"  # the folder of old partitions of earlier versions, put back too


def staging_dir(output: Path) -> Path:
    """A new, empty folder beside ``output`` (same file system, outside the dataset)."""
    folder = output.parent / f".{output.name}{_STAGING}{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def _put_back(folder: Path, output: Path, *, prefix: str) -> list[str]:
    """Move the old partitions in ``folder`` (named ``prefix`` + partition) whose place in
    ``output`` is empty back there; returns their names."""
    restored = []
    for part in folder.iterdir():
        if not part.name.startswith(prefix):
            continue
        target = output / part.name[len(prefix):]
        if not target.exists():
            output.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            restored.append(target.name)
    if restored:
        fsync_dir(output)
    return restored


def discard_staging(staging: Path, output: Path) -> list[str]:
    """Delete a merge's staging folder, after putting back an old partition whose new one
    never arrived (the merge failed between the two moves); returns those put back."""
    restored = _put_back(staging, output, prefix=_OLD) if staging.is_dir() else []
    shutil.rmtree(staging, ignore_errors=True)
    return restored


def recover(output: Path) -> list[str]:
    """Put back partitions a crashed merge moved aside, drop leftover staging folders;
    returns the partitions put back."""
    restored: list[str] = []
    if not output.parent.is_dir():
        return restored
    for leftover in output.parent.glob(f".{output.name}{_ASIDE}*"):
        restored += _put_back(leftover, output, prefix="")
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in output.parent.glob(f".{output.name}{_STAGING}*"):
        restored += discard_staging(leftover, output)
    return restored


def replace_partitions(data: Path, output: Path, column: str, staging: Path) -> list[str]:
    """Move every ``column=value`` folder of ``data`` into ``output``, replacing the folder
    of the same name there, which goes into ``staging`` (deleted by the caller with
    :func:`discard_staging`); returns the partitions written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for part in sorted(data.iterdir()):
        if not (part.is_dir() and part.name.startswith(f"{column}=")):
            continue
        target = output / part.name
        if target.exists():
            os.replace(target, staging / f"{_OLD}{part.name}")
        os.replace(part, target)
        written.append(part.name.split("=", 1)[1])
    fsync_dir(output)
    return written
