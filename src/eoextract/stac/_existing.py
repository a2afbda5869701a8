"""What a campaign already extracted: the values of an item property (e.g. ``sample_id``)
found in a catalogue on disk, a stac-geoparquet file or a STAC API, and the samples of a
job dataframe that are not there yet.

A second run over new samples then creates no backend job for samples extracted before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eoextract.errors import StacError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Values asked of a STAC API per search (the CQL2 ``in`` list), and items per page.
API_CHUNK = 500
API_PAGE = 500


def existing_values(source: str | os.PathLike[str], prop: str, *,
                    among: Iterable[Any] | None = None, timeout: float = 60.0) -> set[str]:
    """The values of item property ``prop`` found in ``source``, as text.

    Args:
        source: A catalogue on disk (its folder or root document), a stac-geoparquet file
            (``.parquet``/``.geoparquet``) or a STAC API root URL (``http(s)://``; searched
            with a CQL2 ``in`` filter on ``among``, page by page).
        prop: The property, e.g. ``"sample_id"``.
        among: The values of interest (required for a STAC API; elsewhere it only narrows
            the answer).
        timeout: Seconds per STAC API request.

    Raises:
        StacError: The source cannot be read, or a STAC API without ``among``.
    """
    wanted = None if among is None else {str(v) for v in among}
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        if wanted is None:
            raise StacError("a STAC API is searched for given values: pass among=")
        found = set(_api_values(text, prop, sorted(wanted), timeout))
    elif text.endswith((".parquet", ".geoparquet")):
        found = _parquet_values(Path(text), prop)
    else:
        found = _catalogue_values(Path(text), prop)
    return found if wanted is None else found & wanted


def drop_existing(df: pd.DataFrame, source: str | os.PathLike[str], prop: str, *,
                  column: str | None = None) -> pd.DataFrame:
    """The rows of ``df`` whose ``column`` (default: ``prop``) value is not yet in ``source``
    (see :func:`existing_values`); for building the job dataframe of a run that extends a
    campaign."""
    column = column or prop
    if column not in df.columns:
        raise StacError(f"the job dataframe has no column {column!r}")
    values = df[column].astype(str)
    found = existing_values(source, prop, among=values)
    return df[~values.isin(found)]


def _catalogue_values(path: Path, prop: str) -> set[str]:
    from eoextract.stac._extend import iter_catalog_items
    from eoextract.stac.publish import find_root

    if not path.exists():
        raise StacError(f"no catalogue at {path}")
    values = ((item.get("properties") or {}).get(prop)
              for item in iter_catalog_items(find_root(path), absolute_hrefs=False))
    return {str(v) for v in values if v is not None}


def _parquet_values(path: Path, prop: str) -> set[str]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        if prop not in schema.names:  # stac-geoparquet keeps properties as top-level columns
            raise StacError(f"{path} has no column {prop!r} (columns: {', '.join(schema.names)})")
        column = pq.read_table(path, columns=[prop]).column(prop)
    except (OSError, ValueError) as exc:
        raise StacError(f"cannot read {path}: {exc}") from exc
    return {str(v) for v in column.to_pylist() if v is not None}


def _api_values(url: str, prop: str, values: list[str], timeout: float) -> Iterator[str]:
    import requests

    search = url.rstrip("/") + "/search"
    for start in range(0, len(values), API_CHUNK):
        body: dict[str, Any] | None = {
            "filter-lang": "cql2-json",
            "filter": {"op": "in", "args": [{"property": prop}, values[start:start + API_CHUNK]]},
            "limit": API_PAGE,
        }
        target: str | None = search
        method = "POST"
        while target is not None:
            try:
                resp = (requests.post(target, json=body, timeout=timeout) if method == "POST"
                        else requests.get(target, timeout=timeout))
                resp.raise_for_status()
                page = resp.json()
            except (requests.RequestException, ValueError) as exc:
                raise StacError(f"STAC API search at {search} failed: {exc}") from exc
            for feature in page.get("features", []):
                value = (feature.get("properties") or {}).get(prop)
                if value is not None:
                    yield str(value)
            nxt = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
            if nxt is None:
                target = None
            else:  # a next link carries its method and, for POST, the body to send
                target, method = nxt["href"], nxt.get("method", "GET").upper()
                body = {**(body or {}), **nxt["body"]} if nxt.get("merge") else nxt.get("body", body)
