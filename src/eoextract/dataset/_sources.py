"""Where the point files of a merge come from: a catalogue's item assets, an output
folder, or files named one by one."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from eoextract.errors import DatasetError

#: File name endings read as point tables, and the reader each needs.
POINT_SUFFIXES = {".parquet": "parquet", ".geoparquet": "parquet", ".csv": "csv", ".json": "json",
                  ".ndjson": "json", ".jsonl": "json"}
#: Endings picked up when a folder is scanned (JSON files of a folder are metadata: the
#: catalogue, job records; name JSON point files one by one or through the catalogue).
_FOLDER_SUFFIXES = (".parquet", ".geoparquet", ".csv")
_POINT_MEDIA_TYPES = ("application/vnd.apache.parquet", "application/x-parquet", "text/csv",
                      "application/geo+json", "application/json")


def file_format(path: str | os.PathLike[str]) -> str:
    """``parquet``, ``csv`` or ``json`` for a point file, from its name.

    Raises:
        DatasetError: Not a point file format.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise DatasetError(f"{path}: not a point table (expected one of "
                           f"{', '.join(sorted(POINT_SUFFIXES))})", path=str(path))
    return POINT_SUFFIXES[suffix]


def _catalogue_root(path: Path) -> Path | None:
    if path.is_file() and path.name in ("collection.json", "catalog.json"):
        return path
    if path.is_dir():
        for name in ("collection.json", "catalog.json"):
            if (path / name).is_file():
                return path / name
    return None


def _from_catalogue(root: Path) -> list[Path]:
    from eoextract.stac import iter_catalog_items

    found = []
    for item in iter_catalog_items(root):
        for asset in item.get("assets", {}).values():
            href = str(asset.get("href", ""))
            media = str(asset.get("type", "")).split(";")[0].strip()
            if "://" in href and not href.startswith("file://"):
                continue  # remote assets are not merged in place
            local = Path(href.removeprefix("file://"))
            if local.suffix.lower() in POINT_SUFFIXES and (
                    not media or media in _POINT_MEDIA_TYPES):
                found.append(local)
    return found


def find_point_files(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                     ) -> list[Path]:
    """The point files to merge, sorted and without duplicates.

    Args:
        sources: A catalogue (``collection.json``/``catalog.json`` or its folder: the local
            Parquet/CSV/JSON assets of its items), an output folder (every ``.parquet``,
            ``.geoparquet`` and ``.csv`` below it, the ``stac`` folder aside), a file, or
            an iterable of these.

    Raises:
        DatasetError: A source that does not exist, or no point file at all.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    found: set[Path] = set()
    for source in items:
        path = Path(source)
        if not path.exists():
            raise DatasetError(f"{path}: no such file or folder", path=str(path))
        root = _catalogue_root(path)
        if root is not None:
            found.update(p.resolve() for p in _from_catalogue(root))
        elif path.is_dir():
            for p in path.rglob("*"):
                rel = p.relative_to(path).parts
                if (p.suffix.lower() in _FOLDER_SUFFIXES and p.is_file()
                        and not any(part.startswith(".") or part == "stac" for part in rel)):
                    found.add(p.resolve())
        else:
            file_format(path)
            found.add(path.resolve())
    if not found:
        raise DatasetError(f"no point file found in {', '.join(map(str, items))}")
    missing = [p for p in found if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: listed in the catalogue but not on disk",
                           path=str(missing[0]))
    return sorted(found)
