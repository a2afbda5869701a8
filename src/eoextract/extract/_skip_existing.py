"""Extending a campaign: leave out of a job dataframe the samples extracted before.

GFMAP job rows carry their samples as a GeoJSON FeatureCollection (``geometry``), each
feature with an id property (e.g. ``sample_id``) and an ``extract`` flag. Samples found in
an earlier catalogue (see :func:`eoextract.stac.existing_values`) get ``extract: false``;
rows left with nothing to extract are dropped.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pandas as pd

from eoextract.errors import ConfigurationError
from eoextract.stac import existing_values

_log = logging.getLogger(__name__)


def without_extracted(df: pd.DataFrame, source: str | os.PathLike[str], prop: str = "sample_id",
                      *, flag: str = "extract") -> pd.DataFrame:
    """``df`` with the samples already in ``source`` marked not to extract, and the rows with
    no sample left to extract dropped.

    Raises:
        ConfigurationError: A row without a FeatureCollection ``geometry``.
    """
    collections = [_features(row_geometry, key) for key, row_geometry in df["geometry"].items()]
    ids = {str(f["properties"][prop]) for fc in collections for f in fc["features"]
           if (f.get("properties") or {}).get(prop) is not None}
    found = existing_values(source, prop, among=ids) if ids else set()
    out = df.copy()
    keep = []
    skipped = 0
    for (key, row), fc in zip(df.iterrows(), collections):
        for feature in fc["features"]:
            props = feature.setdefault("properties", {})
            if str(props.get(prop)) in found and props.get(flag, True):
                props[flag] = False
                skipped += 1
        keep.append(any(f["properties"].get(flag, True) for f in fc["features"]))
        out.at[key, "geometry"] = json.dumps(fc) if isinstance(row["geometry"], str) else fc
    _log.info("%d sample(s) already extracted in %s; %d of %d job(s) left", skipped, source,
              sum(keep), len(df))
    return out[keep]


def _features(geometry: Any, key: Any) -> dict[str, Any]:
    fc = json.loads(geometry) if isinstance(geometry, str) else geometry
    if not isinstance(fc, dict) or fc.get("type") != "FeatureCollection":
        raise ConfigurationError(f"job {key}: skip_existing needs a FeatureCollection geometry")
    return json.loads(json.dumps(fc))  # a copy the caller's frame does not share
