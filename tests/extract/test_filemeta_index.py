"""Refreshing the file metadata of one job's items costs a bounded amount of work per file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from eoextract._util.checksum import file_checksum
from eoextract.extract._filemeta import FileIndex
from eoextract.extract._stac_item import build_item, make_item_id, read_file_metadata, refresh_file_metadata
from eoextract.jobs._download import DownloadedAsset, RemoteAsset

from test_items import write_openeo_netcdf  # same folder, on sys.path under pytest


def _job(root: Path, n: int) -> list[DownloadedAsset]:
    template = write_openeo_netcdf(root / "template.nc", times=("2021-01-03",), bands=("B02",))
    checksum, size = file_checksum(template)
    old = template.stat().st_mtime_ns - 10 * 10**9
    done = []
    for i in range(n):
        path = root / "data" / f"openEO_{i}.nc"
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(template, path)
        os.utime(path, ns=(old, old))
        asset = RemoteAsset(name=f"openEO_{i}.nc", href=f"http://127.0.0.1:1/openEO_{i}.nc", roles=("data",))
        done.append(DownloadedAsset(asset=asset, path=path.resolve(), size=size, checksum=checksum, mtime_ns=old))
    return done


@pytest.mark.parametrize("n", [10, 60])
def test_refreshing_a_jobs_items_touches_each_file_a_bounded_number_of_times(tmp_path, monkeypatch, n):
    done = _job(tmp_path, n)
    items = [build_item(d.asset, read_file_metadata(d.path, checksum=d.checksum),
                        item_id=make_item_id("job", d.asset.name, d.path), collection_id="c") for d in done]
    calls = {"resolve": 0, "hash": 0}
    resolve = Path.resolve

    def counting_resolve(self, *args, **kwargs):
        calls["resolve"] += 1
        return resolve(self, *args, **kwargs)

    def counting_hash(*args, **kwargs):
        calls["hash"] += 1
        return file_checksum(*args, **kwargs)

    monkeypatch.setattr(Path, "resolve", counting_resolve)
    monkeypatch.setattr("eoextract.extract._stac_item.file_checksum", counting_hash)
    known = FileIndex(done)  # as the extraction manager does, once per job
    for item in items:
        refresh_file_metadata(item, tmp_path, known=known)
    # one resolve per record to index it, one per asset to look it up: linear in the files
    assert calls["resolve"] <= 2 * n
    assert calls["hash"] == 0  # every file unchanged since it was verified: none hashed again
    assert {i.assets[d.asset.name].extra_fields["file:checksum"] for i, d in zip(items, done)} == {done[0].checksum}


def test_the_index_trusts_a_record_only_for_an_unchanged_file(tmp_path):
    done = _job(tmp_path, 2)
    index = FileIndex(done)
    d = done[0]
    assert index.checksum(d.path, d.size, d.mtime_ns) == d.checksum
    assert index.checksum(d.path, d.size + 1, d.mtime_ns) is None
    assert index.checksum(d.path, d.size, d.mtime_ns + 1) is None
    assert index.checksum(tmp_path / "other.nc", d.size, d.mtime_ns) is None
    untrusted = FileIndex([DownloadedAsset(asset=d.asset, path=d.path, size=d.size, checksum=d.checksum)])
    assert len(untrusted) == 0 and FileIndex.of(index) is index
