"""Where the point files of a merge come from: a catalogue's item assets, an output
folder, or files named one by one."""

from __future__ import annotations

import os
import stat
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
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in POINT_SUFFIXES:
        raise DatasetError(f"{path}: not a point table (expected one of "
                           f"{', '.join(sorted(POINT_SUFFIXES))})", path=str(path))
    return POINT_SUFFIXES[suffix]


_CATALOGUE_NAMES = ("collection.json", "catalog.json")


def _catalogue_root(path: Path) -> Path | None:
    if path.is_file() and path.name in _CATALOGUE_NAMES:
        return path
    if path.is_dir():
        for name in _CATALOGUE_NAMES:
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


#: Sidecars of a job database file ``<file>``: ``<file>.history.csv``, ``<file>.state.csv``.
_JOB_DB_SIDECARS = (".history.csv", ".state.csv")


def _is_job_database_file(path: Path) -> bool:
    """Whether ``path`` is a job database file eoextract keeps in an output folder (a CSV or
    Parquet file with its ``.meta.json`` sidecar, e.g. GFMAP's ``job_tracker.csv``) or one of
    its sidecars: not point data."""
    if path.with_name(path.name + ".meta.json").is_file():
        return True
    name = path.name
    return any(name.endswith(s) and path.with_name(name[: -len(s)]).is_file() for s in _JOB_DB_SIDECARS)


def find_point_files(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
                     ) -> list[Path]:
    """The point files to merge (absolute paths), sorted and without duplicates.

    Args:
        sources: A catalogue (``collection.json``/``catalog.json`` or its folder: the local
            Parquet/CSV/JSON assets of its items), an output folder (every ``.parquet``,
            ``.geoparquet`` and ``.csv`` below it, the ``stac`` folder and job database
            files aside), a file, or an iterable of these.

    Raises:
        DatasetError: A source that does not exist, or no point file at all.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    found: set[str] = set()
    listed: set[str] = set()  # from a catalogue: checked on disk below
    for source in items:
        path = Path(source)
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            raise DatasetError(f"{path}: no such file or folder", path=str(path)) from None
        root = _catalogue_root(path) if is_dir or path.name in _CATALOGUE_NAMES else None
        if root is not None:
            listed.update(os.path.abspath(p) for p in _from_catalogue(root))
        elif is_dir:
            for p in path.rglob("*"):
                rel = p.relative_to(path).parts
                if (p.suffix.lower() in _FOLDER_SUFFIXES and p.is_file()
                        and not any(part.startswith(".") or part == "stac" for part in rel)
                        and not _is_job_database_file(p)):
                    found.add(os.path.abspath(p))
        else:  # one file: one stat, and its name checked
            file_format(path)
            found.add(os.path.abspath(path))
    missing = sorted(p for p in listed - found if not os.path.isfile(p))
    if missing:
        raise DatasetError(f"{missing[0]}: listed in the catalogue but not on disk",
                           path=missing[0])
    found |= listed
    if not found:
        raise DatasetError(f"no point file found in {', '.join(map(str, items))}")
    return [Path(p) for p in sorted(found)]
