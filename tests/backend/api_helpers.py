"""Helpers shared by the API tests of the embedded backend (imported by the test modules)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

BBOX = {"west": 5.0, "south": 51.0, "east": 5.005, "north": 51.005}


def instant_graph() -> dict:
    """A small valid process graph (never executed by instant jobs)."""
    return {
        "load": {
            "process_id": "load_collection",
            "arguments": {
                "id": "SENTINEL2_L2A",
                "spatial_extent": BBOX,
                "temporal_extent": ["2021-06-01", "2021-06-06"],
                "bands": ["B04"],
            },
        },
        "save": {
            "process_id": "save_result",
            "arguments": {"data": {"from_node": "load"}, "format": "NetCDF"},
            "result": True,
        },
    }


def checksum(data: bytes) -> str:
    """``file:checksum`` of bytes."""
    return "1220" + hashlib.sha256(data).hexdigest()


@pytest.fixture()
def title():
    """A job title unique to the test (fault counters are per title)."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def auth_headers(connection):
    """Bearer header of the ``connection`` fixture, for raw ``requests`` calls."""
    return {"Authorization": f"Bearer {connection.auth.bearer}"}
