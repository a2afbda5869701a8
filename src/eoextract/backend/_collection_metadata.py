"""STAC metadata of the synthetic collections (``GET /collections`` and ``/collections/{id}``)."""

from __future__ import annotations

from eoextract.backend._synthetic_collections import CollectionSpec


def band_metadata(spec: CollectionSpec, name: str) -> dict:
    """``eo:bands``-style description of band ``name`` (unknown names get a bare entry)."""
    base = name.rsplit("-", 1)[-1]  # "S2-L2A-B02" -> "B02"
    for b in spec.bands:
        if b.name in (name, base):
            out: dict = {"name": name}
            if b.common_name:
                out["common_name"] = b.common_name
            if b.center_wavelength is not None:
                out["center_wavelength"] = b.center_wavelength
            out["gsd"] = b.gsd
            out["description"] = b.description
            return out
    return {"name": name}


def _extent(spec: CollectionSpec) -> dict:
    return {
        "spatial": {"bbox": [[-180.0, -84.0, 180.0, 84.0]]},
        "temporal": {"interval": [[spec.epoch.strftime("%Y-%m-%dT%H:%M:%SZ"), None]]},
    }


def collection_summary(spec: CollectionSpec) -> dict:
    """Short STAC Collection for ``GET /collections``."""
    return {
        "stac_version": "1.0.0",
        "type": "Collection",
        "id": spec.id,
        "title": spec.title,
        "description": spec.description,
        "license": "proprietary",
        "keywords": list(spec.keywords),
        "extent": _extent(spec),
        "links": [],
    }


# Data come in the UTM zone of each location ("auto UTM", as real Sentinel backends declare it).
_AUTO_UTM = {
    "$schema": "https://proj.org/schemas/v0.2/projjson.schema.json",
    "area": "World",
    "bbox": {"east_longitude": 180, "north_latitude": 84, "south_latitude": -80, "west_longitude": -180},
    "id": {"authority": "OGC", "code": "Auto42001", "version": "1.3"},
    "name": "AUTO 42001 (Universal Transverse Mercator)",
}


def collection_metadata(spec: CollectionSpec) -> dict:
    """Full STAC Collection for ``GET /collections/{id}`` with ``cube:dimensions``."""
    bands = [band_metadata(spec, b.name) for b in spec.bands]
    out = collection_summary(spec)
    out["stac_extensions"] = [
        "https://stac-extensions.github.io/datacube/v2.2.0/schema.json",
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    ]
    out["cube:dimensions"] = {
        "x": {"type": "spatial", "axis": "x", "extent": [166021.44, 833978.56],
              "step": 10, "reference_system": _AUTO_UTM},
        "y": {"type": "spatial", "axis": "y", "extent": [0.0, 10000000.0], "step": 10,
              "reference_system": _AUTO_UTM},
        "t": {"type": "temporal", "extent": _extent(spec)["temporal"]["interval"][0],
              "step": f"P{spec.revisit_days}D"},
        "bands": {"type": "bands", "values": spec.band_names},
    }
    summaries: dict = {
        "eo:bands": bands,
        "bands": bands,
        "platform": [spec.platform],
        "instruments": list(spec.instruments),
        "gsd": sorted({b.gsd for b in spec.bands}),
    }
    if spec.kind == "optical":
        summaries["eo:cloud_cover"] = {"minimum": 0, "maximum": 100}
    out["summaries"] = summaries
    out["providers"] = [{"name": "eoextract", "roles": ["producer", "host"],
                         "description": "Synthetic data generated on request."}]
    return out
