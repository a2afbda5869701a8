"""Offline validation of STAC objects and whole catalogues.

Schemas come from the bundle shipped with eoextract (``schemas/`` in the repository,
``eoextract/_schemas`` in the wheel). They are loaded once into a
:class:`referencing.Registry` keyed by their canonical URL, so no schema is ever fetched
from the network. For each combination of STAC type, STAC version and extension set one
:class:`jsonschema.Draft7Validator` is compiled and cached. When ``jsonschema-rs`` is
installed (a core dependency) a compiled Rust validator answers the common case (valid)
in tens of microseconds; only invalid objects go through :mod:`jsonschema` to get
precise messages.

Typical use::

    from eoextract.stac import validate, validate_catalog

    validate(item)                       # pystac object or dict, raises on problems
    report = validate_catalog("out/stac")
    report.raise_for_errors()
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from eoextract.errors import StacValidationError

try:  # optional accelerator: same schemas, compiled to native code
    import jsonschema_rs
except ImportError:  # pragma: no cover - exercised only without the wheel
    jsonschema_rs = None

__all__ = [
    "ValidationReport",
    "bundled_schema_urls",
    "validate",
    "validate_catalog",
    "validate_dict",
]

logger = logging.getLogger(__name__)

_CORE_SCHEMA = {
    "Feature": "https://schemas.stacspec.org/v{version}/item-spec/json-schema/item.json",
    "Collection": "https://schemas.stacspec.org/v{version}/collection-spec/json-schema/collection.json",
    "Catalog": "https://schemas.stacspec.org/v{version}/catalog-spec/json-schema/catalog.json",
}
_TYPE_NAMES = {"Feature": "Item", "Collection": "Collection", "Catalog": "Catalog"}
#: Link relations that point to another STAC object of the same catalogue.
_STRUCTURAL_RELS = frozenset({"root", "parent", "child", "item", "collection"})
_MAX_ERRORS_PER_OBJECT = 50


# --------------------------------------------------------------------------- schemas


def _schema_dir() -> Path:
    """Folder of the bundled schemas: packaged copy first, then the source checkout."""
    try:
        packaged = resources.files("eoextract") / "_schemas"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual importers
        pass
    checkout = Path(__file__).resolve().parents[3] / "schemas"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        "the STAC schema bundle is missing: neither eoextract/_schemas nor the repository's "
        "schemas/ folder was found"
    )


@functools.cache
def _schema_map() -> dict[str, Path]:
    root = _schema_dir()
    mapping = orjson.loads((root / "map.json").read_bytes())
    return {url: root / rel for url, rel in mapping.items()}


def bundled_schema_urls() -> list[str]:
    """List the canonical URLs of every schema in the offline bundle.

    Returns:
        The URLs, sorted.
    """
    return sorted(_schema_map())


@functools.cache
def _registry() -> Registry:
    resources_: list[tuple[str, Resource]] = []
    for url, path in _schema_map().items():
        contents = orjson.loads(path.read_bytes())
        resources_.append((url, Resource.from_contents(contents, default_specification=DRAFT7)))
    return Registry().with_resources(resources_).crawl()


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@functools.cache
def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_is_rfc3339)
    return checker


_compile_lock = threading.Lock()


@functools.cache
def _validator(schema_urls: tuple[str, ...]) -> Draft7Validator:
    """A compiled validator checking an instance against all ``schema_urls`` at once."""
    schema = {"allOf": [{"$ref": url} for url in schema_urls]}
    with _compile_lock:
        validator = Draft7Validator(schema, registry=_registry(), format_checker=_format_checker())
    logger.debug("compiled STAC validator for %s", schema_urls)
    return validator


def _refuse_download(uri: str) -> Any:
    raise ValueError(f"schema {uri} is not in the offline bundle")


@functools.cache
def _rs_registry() -> Any:
    resources_ = [(url, orjson.loads(path.read_bytes())) for url, path in _schema_map().items()]
    return jsonschema_rs.Registry(
        resources_, draft=jsonschema_rs.Draft7, retriever=_refuse_download
    )


@functools.cache
def _fast_validator(schema_urls: tuple[str, ...]) -> Any | None:
    """The ``jsonschema-rs`` twin of :func:`_validator`, or None when unavailable."""
    if jsonschema_rs is None:
        return None
    schema = {"allOf": [{"$ref": url} for url in schema_urls]}
    try:
        return jsonschema_rs.Draft7Validator(
            schema,
            registry=_rs_registry(),
            retriever=_refuse_download,
            formats={"date-time": _is_rfc3339},
            validate_formats=True,
        )
    except Exception as exc:  # noqa: BLE001 - any failure: use the pure-Python path
        logger.debug("jsonschema-rs cannot compile %s (%s); using jsonschema", schema_urls, exc)
        return None


# --------------------------------------------------------------------------- dicts


def _leaf_errors(error: ValidationError) -> list[ValidationError]:
    """The errors that explain ``error``, descending into ``oneOf``/``anyOf`` branches.

    Of the alternatives, the branch with the fewest errors (then the deepest ones) is the
    one the object was most likely meant to follow, e.g. the Item branch of an extension
    schema for an item.
    """
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branch = sub.relative_schema_path[0] if sub.relative_schema_path else 0
        branches.setdefault(branch, []).append(sub)
    chosen = min(
        branches.values(),
        key=lambda errs: (len(errs), -max(len(e.absolute_path) for e in errs)),
    )
    leaves: list[ValidationError] = []
    for sub in chosen:
        leaves.extend(_leaf_errors(sub))
    return leaves or [error]


def _format_errors(error: ValidationError, schema_urls: tuple[str, ...]) -> list[str]:
    source = ""
    if error.schema_path and len(error.schema_path) > 1:
        index = error.schema_path[1]
        if isinstance(index, int) and index < len(schema_urls):
            source = f" [{schema_urls[index]}]"
    messages = []
    for leaf in _leaf_errors(error):
        path = "/".join(str(p) for p in leaf.absolute_path) or "(root)"
        messages.append(f"{path}: {leaf.message}{source}")
    return messages


def validate_dict(d: Mapping[str, Any]) -> list[str]:
    """Validate one STAC object given as a dict, without network access.

    The object is checked against the core schema of its type and STAC version and the
    schema of every extension listed in ``stac_extensions``. An extension whose schema is
    not in the bundle is reported as an error naming it (nothing is downloaded).

    Args:
        d: A STAC Item, Collection or Catalog as a JSON-compatible dict.

    Returns:
        Error messages, each ``"<json path>: <problem> [<schema url>]"``; empty when the
        object is valid.
    """
    if not isinstance(d, Mapping):
        return [f"(root): expected a JSON object, got {type(d).__name__}"]
    errors: list[str] = []
    stac_type = d.get("type")
    if stac_type not in _CORE_SCHEMA:
        if stac_type is None and "extent" in d:
            stac_type = "Collection"
        elif stac_type is None and "properties" in d:
            stac_type = "Feature"
        else:
            expected = "'Feature', 'Collection' or 'Catalog'"
            return [f"type: {stac_type!r} is not a STAC type (expected {expected})"]
    version = d.get("stac_version")
    if not isinstance(version, str):
        return [f"stac_version: missing or not a string ({version!r})"]
    known = _schema_map()
    core = _CORE_SCHEMA[stac_type].format(version=version)
    if core not in known:
        versions = sorted(
            {u.split("/")[3] for u in known if u.startswith("https://schemas.stacspec.org/")}
        )
        message = (
            f"stac_version: no bundled schema for STAC {version} "
            f"(bundled: {', '.join(versions)}); cannot validate offline"
        )
        return [message]
    urls = [core]
    extensions = d.get("stac_extensions") or []
    if not isinstance(extensions, list):
        errors.append("stac_extensions: must be a list of schema URLs")
        extensions = []
    for ext in extensions:
        if not isinstance(ext, str):
            errors.append(f"stac_extensions: {ext!r} is not a schema URL")
        elif ext not in known:
            errors.append(
                f"stac_extensions: schema {ext} is not in the offline bundle; "
                "it cannot be validated without network (add it to schemas/)"
            )
        elif ext not in urls:
            urls.append(ext)
    schema_urls = tuple(urls)
    fast = _fast_validator(schema_urls)
    if fast is not None and fast.is_valid(d):
        return errors
    found: list[str] = []
    for error in _validator(schema_urls).iter_errors(d):
        found.extend(m for m in _format_errors(error, schema_urls) if m not in found)
        if len(found) >= _MAX_ERRORS_PER_OBJECT:
            found.append("... further errors not shown")
            break
    errors.extend(found)
    if not found and fast is not None:  # the two engines disagree: keep the native message
        errors.extend(
            f"{'/'.join(map(str, e.instance_path)) or '(root)'}: {e.message}"
            for e in fast.iter_errors(d)
        )
    return errors


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


def _is_absolute_href(href: str) -> bool:
    """True for URLs, absolute paths and Windows drive paths (anything not relative)."""
    return href.startswith(("/", "\\")) or bool(urlsplit(href).scheme)


def _is_local_absolute(href: str) -> bool:
    """An absolute href naming a local file (which breaks when the tree moves)."""
    return href.startswith(("/", "\\", "file:")) or bool(re.match(r"^[A-Za-z]:[\\/]", href))


def _load_json(path: Path) -> tuple[Any, str | None]:
    try:
        return orjson.loads(path.read_bytes()), None
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, orjson.JSONDecodeError) as exc:
        return None, f"cannot read JSON: {exc}"


def _check_links(
    d: Mapping[str, Any],
    path: Path,
    *,
    check_assets: bool,
    known_files: dict[str, bool] | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Check hrefs of one object; return problems and the (rel, target path) to follow.

    ``known_files`` caches the existence of shared targets (root, parent, collection),
    which thousands of items point to.
    """
    problems: list[str] = []
    targets: list[tuple[str, str]] = []
    folder = os.path.dirname(path)
    known = known_files if known_files is not None else {}
    links = d.get("links")
    if isinstance(links, list):
        for i, link in enumerate(links):
            if not isinstance(link, Mapping):
                continue
            rel, href = link.get("rel"), link.get("href")
            if rel not in _STRUCTURAL_RELS or not isinstance(href, str):
                if rel == "self" and isinstance(href, str) and _is_local_absolute(href):
                    problems.append(f"links/{i}: self link {href!r} is an absolute local path")
                continue
            if _is_absolute_href(href):
                problems.append(f"links/{i}: {rel} link href {href!r} is not relative")
                continue
            target = os.path.normpath(os.path.join(folder, href))
            if rel == "item":
                exists = os.path.isfile(target)
            else:
                exists = known.get(target)
                if exists is None:
                    exists = known[target] = os.path.isfile(target)
            if not exists:
                problems.append(f"links/{i}: {rel} link {href!r} does not resolve to a file")
                continue
            if rel in ("child", "item"):
                targets.append((rel, target))
    assets = d.get("assets")
    if isinstance(assets, Mapping):
        for key, asset in assets.items():
            href = asset.get("href") if isinstance(asset, Mapping) else None
            if not isinstance(href, str):
                continue
            if _is_local_absolute(href):
                problems.append(f"assets/{key}: href {href!r} is an absolute local path")
            elif (
                check_assets
                and not _is_absolute_href(href)
                and not os.path.exists(os.path.join(folder, href))
            ):
                problems.append(f"assets/{key}: file {href!r} does not exist")
    return problems, targets


def _validate_item_file(
    args: tuple[str, bool], known_files: dict[str, bool] | None = None
) -> tuple[str, list[str]]:
    path_str, check_assets = args
    path = Path(path_str)
    d, problem = _load_json(path)
    if problem:
        return path_str, [problem]
    errors = validate_dict(d)
    if isinstance(d, Mapping) and d.get("type") != "Feature":
        errors.append(f"linked as an item but its type is {d.get('type')!r}")
    if isinstance(d, Mapping):
        problems, _ = _check_links(d, path, check_assets=check_assets, known_files=known_files)
        errors.extend(problems)
    return path_str, errors


def _validate_item_chunk(chunk: list[tuple[str, bool]]) -> list[tuple[str, list[str]]]:
    known: dict[str, bool] = {}
    return [_validate_item_file(a, known) for a in chunk]


def _chunks(seq: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def validate_catalog(
    path: str | os.PathLike[str],
    *,
    workers: int | None = None,
    check_assets: bool = False,
) -> ValidationReport:
    """Validate a whole catalogue on disk: every catalog, collection and item in it.

    Starting from ``path`` (a ``catalog.json``/``collection.json`` or a folder holding
    one), the walk follows ``child`` and ``item`` links. Every object is checked against
    its schemas; every structural link (root, parent, child, item, collection) must be a
    relative href that resolves to an existing file; asset hrefs must not be absolute
    local paths. All problems are collected, none stops the walk.

    Args:
        path: Root file of the catalogue, or the folder containing it.
        workers: Processes used to validate items; ``None`` or ``1`` validates in this
            process (fast enough for ~100k items in a few minutes).
        check_assets: Also check that local (relative) asset files exist.

    Returns:
        The report with counts and the problems per file.
    """
    root = _resolve_root(Path(path))
    report = ValidationReport(root=root)
    item_files: list[str] = []
    seen: set[Path] = set()
    known: dict[str, bool] = {}
    stack = [Path(os.path.abspath(root))]
    while stack:
        current = stack.pop()
        if current in seen:
            report.add(current, ["reached twice through child links (cycle or duplicate)"])
            continue
        seen.add(current)
        d, problem = _load_json(current)
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
        problems, targets = _check_links(d, current, check_assets=check_assets, known_files=known)
        errors.extend(problems)
        report.add(current, errors)
        children: list[Path] = []
        for rel, target in targets:
            if rel == "child":
                children.append(Path(target))
            else:
                item_files.append(target)
        stack.extend(reversed(children))

    if len(set(item_files)) != len(item_files):
        dupes = len(item_files) - len(set(item_files))
        report.add(root, [f"{dupes} item file(s) linked more than once"])
        item_files = list(dict.fromkeys(item_files))
    report.n_items = len(item_files)
    tasks = [(f, check_assets) for f in item_files]
    if workers and workers > 1 and len(tasks) > 200:
        size = max(50, min(2000, len(tasks) // (workers * 4) or 1))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for results in pool.map(_validate_item_chunk, _chunks(tasks, size)):
                for file, errs in results:
                    report.add(file, errs)
    else:
        for task in tasks:
            file, errs = _validate_item_file(task, known)
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
            d, problem = _load_json(path)
            if problem is None and isinstance(d, Mapping) and d.get("type") == "Feature":
                _, errors = _validate_item_file((str(path), False))
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
