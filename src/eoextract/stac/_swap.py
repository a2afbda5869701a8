"""Putting a freshly built catalogue folder in the place of the previous one."""

from __future__ import annotations

import os
from pathlib import Path

from eoextract._util.files import replace_folder
from eoextract.errors import StacError


def swap_in(built: Path, final: Path) -> None:
    """Rename the folder ``built`` to ``final``, replacing a previous catalogue there whole.

    Raises:
        StacError: ``final`` is not a folder, or holds anything but a STAC catalogue's JSON.
    """
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise StacError(f"{final} exists and is not a folder")
    if final.exists():
        _check_replaceable(final)
    replace_folder(built, final)


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace a folder that holds anything but a STAC catalogue's JSON."""
    if not any(folder.iterdir()):
        return
    if not ((folder / "collection.json").is_file() or (folder / "catalog.json").is_file()):
        raise StacError(
            f"{folder} is not empty and holds no collection.json/catalog.json; "
            "refusing to replace it with the catalogue"
        )
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if not name.endswith(".json"):
                raise StacError(
                    f"{folder} holds {os.path.join(dirpath, name)}, which is not STAC JSON; "
                    "refusing to replace it (the catalogue is rebuilt whole)"
                )
