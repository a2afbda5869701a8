"""The catalogue of an extraction, built from its item store.

:func:`build_catalogue` turns the items the manager stored per job (see
:class:`~eoextract.extract._store.ItemStore`) into a validated, relocatable catalogue, from any
process; ``ExtractionManager.create_stac`` and ``eoextract stac build`` both call it.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any

from eoextract.errors import ConfigurationError, EmptyCatalogue
from eoextract.extract._store import ItemStore

_log = logging.getLogger(__name__)


def build_catalogue(
    output_dir: str | os.PathLike[str],
    collection_id: str | None = None,
    description: str | None = None,
    *,
    output_path: str | os.PathLike[str] | None = None,
    existing: str | os.PathLike[str] | None = None,
    validate: bool = True,
    **collection_options: Any,
) -> Path:
    """Build the STAC catalogue of an extraction from its stored items, in one pass.

    Usable from any process once jobs have finished (e.g. ``eoextract stac build``):
    only ``output_dir`` is read.

    Args:
        output_dir: The extraction's output folder.
        collection_id: Id of the collection (default: the one the manager recorded in
            ``output_dir/.eoextract/extraction.json``).
        description: Its description (default: the recorded one, else
            ``"Extraction <collection id>"``; STAC needs a non-empty one).
        output_path: Folder of the catalogue (default ``output_dir/stac``): a direct
            subfolder of ``output_dir`` or of a folder containing it, so that asset
            hrefs can be relative; an earlier catalogue there is replaced whole.
        existing: An existing ``collection.json`` to extend: its items are kept (those
            with the id of a new item are replaced) and its metadata too.
        validate: Validate the written catalogue (schemas, links, asset files).
        **collection_options: Passed to :func:`~eoextract.stac.build_collection`
            (``title``, ``license``, ``providers``, ``keywords``, ``extra_fields``,
            ``layout``, ``max_links_per_catalog``, ``stac_extensions``).

    Returns:
        Path of the written ``collection.json``.

    Raises:
        ConfigurationError: Without a collection id (given or recorded), or for an
            ``output_path`` the files cannot be reached from with relative hrefs.
        StacValidationError: If ``validate`` and the catalogue is invalid.
        StacError: For unreadable stored items or duplicate item ids.
        EmptyCatalogue: When there is no item to catalogue (no finished job stored one,
            and no ``existing`` collection to extend); nothing is written.
    """
    from eoextract.stac import build_collection, extend_collection, validate_catalog

    root = Path(output_dir)
    store = ItemStore(root)
    recorded = store.settings()
    collection_id = collection_id or recorded.get("collection_id")
    if not collection_id:
        raise ConfigurationError(f"no collection id given, and none recorded in {root}")
    if not description:
        description = str(recorded.get("description") or f"Extraction {collection_id}")
    target = Path(output_path) if output_path is not None else root / "stac"
    if not root.resolve().is_relative_to(target.absolute().parent.resolve()):
        raise ConfigurationError(
            f"the catalogue folder {target} must be a direct subfolder of {root} (or of a folder "
            "containing it), so that its asset hrefs can be relative"
        )
    items = store.iter_items()
    first = next(items, None)
    if first is None and (existing is None or not Path(existing).exists()):
        raise EmptyCatalogue(
            f"nothing to catalogue in {root}: no finished job stored any item (jobs that failed "
            "store none; see `eoextract status` and `eoextract jobs --status error` of the job "
            "database); no catalogue was written")
    if first is not None:
        items = itertools.chain([first], items)
    if existing is not None and Path(existing).exists():
        # the existing collection keeps its id and metadata unless options say otherwise
        options = {k: v for k, v in collection_options.items() if v is not None}
        path = extend_collection(existing, items, output_dir=target, **options)
    else:
        if existing is not None:
            _log.info("%s does not exist yet; building a new collection", existing)
        path = build_collection(items, target, collection_id=collection_id, description=description,
                                **collection_options)
    if validate:
        report = validate_catalog(path, check_assets=True)
        report.raise_for_errors()
        _log.info("catalogue %s: %d item(s), valid", path, report.n_items)
    return path
