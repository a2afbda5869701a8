"""The offline schema bundle and the validation of one STAC object given as a dict.

Schemas come from the bundle shipped with eoextract (``schemas/`` in the repository,
``eoextract/_schemas`` in the wheel). They are loaded once into a
:class:`referencing.Registry` keyed by their canonical URL, so no schema is ever fetched
from the network. For each combination of STAC type, STAC version and extension set one
:class:`jsonschema.Draft7Validator` is compiled and cached. When ``jsonschema-rs`` is
installed (a core dependency) a compiled Rust validator answers the common case (valid)
in tens of microseconds; only invalid objects go through :mod:`jsonschema` to get
precise messages.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

try:  # optional accelerator: same schemas, compiled to native code
    import jsonschema_rs
except ImportError:  # pragma: no cover - exercised only without the wheel
    jsonschema_rs = None

logger = logging.getLogger(__name__)

_CORE_SCHEMA = {
    "Feature": "https://schemas.stacspec.org/v{version}/item-spec/json-schema/item.json",
    "Collection": "https://schemas.stacspec.org/v{version}/collection-spec/json-schema/collection.json",
    "Catalog": "https://schemas.stacspec.org/v{version}/catalog-spec/json-schema/catalog.json",
}
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
