"""Offline validation of STAC objects and whole catalogues.

:func:`validate_dict` checks one object against the bundled schemas (see
:mod:`eoextract.stac._validate_schemas`); :func:`validate_catalog` walks a catalogue on
disk and checks every document and its links; :func:`validate` takes whatever names a
STAC object and raises on problems.

Typical use::

    from eoextract.stac import validate, validate_catalog

    validate(item)                       # pystac object or dict, raises on problems
    report = validate_catalog("out/stac")
    report.raise_for_errors()
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract.errors import StacValidationError
from eoextract.stac._idset import CompactStringSet
from eoextract.stac._validate_links import check_links, load_json
from eoextract.stac._validate_schemas import validate_dict

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- catalogues


@dataclass
class ValidationReport:
    """Outcome of validating a catalogue on disk.

    Attributes:
        root: The file the walk started from.
        n_catalogs: Number of Catalog files checked.
        n_collections: Number of Collection files checked.
        n_items: Number of Item files checked.
        errors: Error messages per file (path as given by the walk); files without
            problems are absent.
    """

    root: Path
    n_catalogs: int = 0
    n_collections: int = 0
    n_items: int = 0
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.errors

    @property
    def n_errors(self) -> int:
        """Total number of error messages."""
        return sum(len(v) for v in self.errors.values())

    def messages(self) -> list[str]:
        """All problems as ``"<file>: <message>"`` lines."""
        return [f"{path}: {msg}" for path, msgs in self.errors.items() for msg in msgs]

    def add(self, path: str | os.PathLike[str], messages: Iterable[str]) -> None:
        """Record problems of one file."""
        messages = list(messages)
        if messages:
            self.errors.setdefault(str(path), []).extend(messages)

    def raise_for_errors(self) -> None:
        """Raise if any problem was found.

        Raises:
            StacValidationError: With every message in ``.errors``.
        """
        if self.errors:
            lines = self.messages()
            shown = "\n  ".join(lines[:20])
            more = f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else ""
            raise StacValidationError(
                f"STAC catalogue {self.root} has {len(lines)} problem(s) in "
                f"{len(self.errors)} file(s):\n  {shown}{more}",
                lines,
            )


def _validate_item_file(
    args: tuple[str, bool, bool], known_files: dict[str, bool] | None = None
) -> tuple[str, list[str]]:
    path_str, check_assets, check_checksums = args
    path = Path(path_str)
    d, problem = load_json(path)
    if problem:
        return path_str, [problem]
    errors = validate_dict(d)
    if isinstance(d, Mapping) and d.get("type") != "Feature":
        errors.append(f"linked as an item but its type is {d.get('type')!r}")
    if isinstance(d, Mapping):
        problems, _ = check_links(d, path, check_assets=check_assets, known_files=known_files,
                                  check_checksums=check_checksums)
        errors.extend(problems)
    return path_str, errors


def _validate_item_chunk(chunk: list[tuple[str, bool, bool]]) -> list[tuple[str, list[str]]]:
    known: dict[str, bool] = {}
    return [_validate_item_file(a, known) for a in chunk]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def validate_catalog(
    path: str | os.PathLike[str],
    *,
    workers: int | None = None,
    check_assets: bool = False,
    check_checksums: bool = False,
) -> ValidationReport:
    """Validate a whole catalogue on disk: every catalog, collection and item in it.

    Starting from ``path`` (a ``catalog.json``/``collection.json`` or a folder holding
    one), the walk follows ``child`` and ``item`` links. Every object is checked against
    its schemas; every structural link (root, parent, child, item, collection) must be a
    relative href that resolves to an existing file; asset hrefs must not be absolute
    local paths. All problems are collected, none stops the walk.

    The walk streams: the items of a catalogue are validated as soon as that catalogue
    is read, with validators compiled once per schema set, so memory does not grow with
    the number of items (a catalogue of a million items is validated in a few minutes).

    Args:
        path: Root file of the catalogue, or the folder containing it.
        workers: Processes used to validate items; ``None`` or ``1`` validates in this
            process.
        check_assets: Also check that local (relative) asset files exist and have their
            asset's ``file:size``.
        check_checksums: With ``check_assets``, also hash each local asset file and
            compare it with its ``file:checksum`` (reads every file: slow for big
            catalogues).

    Returns:
        The report with counts and the problems per file.
    """
    root = _resolve_root(Path(path))
    report = ValidationReport(root=root)
    known: dict[str, bool] = {}
    item_files = _walk_catalogs(root, report, known, check_assets, check_checksums)
    tasks = ((f, check_assets, check_assets and check_checksums) for f in item_files)
    if workers and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending: deque[Future[list[tuple[str, list[str]]]]] = deque()
            for chunk in _chunks(tasks, _CHUNK):
                pending.append(pool.submit(_validate_item_chunk, chunk))
                while len(pending) > 2 * workers:
                    _add_results(report, pending.popleft().result())
            while pending:
                _add_results(report, pending.popleft().result())
    else:
        for task in tasks:
            file, errs = _validate_item_file(task, known)
            report.n_items += 1
            report.add(file, errs)
    logger.info(
        "validated %s: %d collection(s), %d catalog(s), %d item(s), %d problem(s)",
        root,
        report.n_collections,
        report.n_catalogs,
        report.n_items,
        report.n_errors,
    )
    return report


#: Item files per task of a worker process.
_CHUNK = 500


def _add_results(report: ValidationReport, results: list[tuple[str, list[str]]]) -> None:
    for file, errs in results:
        report.n_items += 1
        report.add(file, errs)


def _walk_catalogs(root: Path, report: ValidationReport, known: dict[str, bool],
                   check_assets: bool, check_checksums: bool) -> Iterator[str]:
    """Check every catalog and collection below ``root``; yield each linked item file once,
    right after the catalogue that links it."""
    seen: set[Path] = set()
    linked = CompactStringSet()
    duplicates = 0
    stack = [Path(os.path.abspath(root))]
    while stack:
        current = stack.pop()
        if current in seen:
            report.add(current, ["reached twice through child links (cycle or duplicate)"])
            continue
        seen.add(current)
        d, problem = load_json(current)
        if problem:
            report.add(current, [problem])
            continue
        errors = validate_dict(d)
        if not isinstance(d, Mapping):
            report.add(current, errors)
            continue
        kind = d.get("type")
        if kind == "Collection":
            report.n_collections += 1
        elif kind == "Catalog":
            report.n_catalogs += 1
        else:
            errors.append(f"linked as a child but its type is {kind!r}")
        problems, targets = check_links(d, current, check_assets=check_assets, known_files=known,
                                        check_checksums=check_checksums)
        errors.extend(problems)
        report.add(current, errors)
        children: list[Path] = []
        for rel, target in targets:
            if rel == "child":
                children.append(Path(target))
            elif linked.add(target):
                yield target
            else:
                duplicates += 1
        stack.extend(reversed(children))
    if duplicates:
        report.add(root, [f"{duplicates} item file(s) linked more than once"])


def _resolve_root(path: Path) -> Path:
    if path.is_dir():
        for name in ("collection.json", "catalog.json"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds neither collection.json nor catalog.json")
    return path


# --------------------------------------------------------------------------- public entry


def validate(obj: Any, *, workers: int | None = None) -> None:
    """Validate a STAC object, a JSON file or a whole catalogue, offline.

    Args:
        obj: A pystac object (anything with ``to_dict()``), a dict, or a path. A path to a
            folder, a ``catalog.json`` or a ``collection.json`` validates the whole
            catalogue below it (see :func:`validate_catalog`); a path to an item file
            validates that item and its links.
        workers: Processes used for the items of a catalogue.

    Raises:
        StacValidationError: When anything is invalid; ``.errors`` lists every problem.
        FileNotFoundError: When a path does not exist.
    """
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.exists():
            raise FileNotFoundError(f"no such STAC file or folder: {path}")
        if path.is_file():
            d, problem = load_json(path)
            if problem is None and isinstance(d, Mapping) and d.get("type") == "Feature":
                _, errors = _validate_item_file((str(path), False, False))
                _raise(errors, f"STAC item {path}")
                return
        validate_catalog(path, workers=workers).raise_for_errors()
        return
    if isinstance(obj, Mapping):
        d = obj
        what = f"STAC object {obj.get('id', '?')!r}"
    elif hasattr(obj, "to_dict"):
        d = obj.to_dict(include_self_link=False, transform_hrefs=False)
        what = f"STAC {type(obj).__name__} {getattr(obj, 'id', '?')!r}"
    else:
        raise TypeError(f"cannot validate a {type(obj).__name__}")
    _raise(validate_dict(d), what)


def _raise(errors: list[str], what: str) -> None:
    if errors:
        shown = "\n  ".join(errors[:20])
        raise StacValidationError(f"{what} is invalid:\n  {shown}", errors)
