"""Hive partitions replaced one at a time: a merge writes its partitions to a staging
folder beside the dataset, then moves each over the old one (the old one aside first, then
the new one in, then the old one deleted). Partitions the merge did not write stay as they
are; a crash between the two moves leaves the old partition in the aside folder, and the
next merge puts it back before doing anything else."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from eoextract._util.files import fsync_dir

_STAGING, _ASIDE = ".staging-", ".replaced-"


def staging_dir(output: Path) -> Path:
    """A new, empty folder beside ``output`` (same file system, outside the dataset)."""
    folder = output.parent / f".{output.name}{_STAGING}{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    return folder


def recover(output: Path) -> list[str]:
    """Put back partitions a crashed merge moved aside, drop leftover staging folders;
    returns the partitions put back."""
    restored = []
    if not output.parent.is_dir():
        return restored
    for leftover in output.parent.glob(f".{output.name}{_ASIDE}*"):
        for part in leftover.iterdir():
            target = output / part.name
            if not target.exists():
                output.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
                restored.append(part.name)
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in output.parent.glob(f".{output.name}{_STAGING}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if restored:
        fsync_dir(output)
    return restored


def replace_partitions(staging: Path, output: Path, column: str) -> list[str]:
    """Move every ``column=value`` folder of ``staging`` into ``output``, replacing the
    folder of the same name there; returns the partition values written. ``staging`` is
    removed afterwards."""
    output.mkdir(parents=True, exist_ok=True)
    aside = output.parent / f".{output.name}{_ASIDE}{uuid.uuid4().hex[:12]}"
    written = []
    try:
        for part in sorted(staging.iterdir()):
            if not (part.is_dir() and part.name.startswith(f"{column}=")):
                continue
            target = output / part.name
            if target.exists():
                aside.mkdir(exist_ok=True)
                os.replace(target, aside / part.name)
            os.replace(part, target)
            written.append(part.name.split("=", 1)[1])
        fsync_dir(output)
        shutil.rmtree(aside, ignore_errors=True)  # kept on failure, for :func:`recover`
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written
