"""Output path generators: both signature styles, up-front checks, confinement."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest

from eoextract.errors import ConfigurationError, UnsafeAssetPath
from eoextract.extract._placement import (
    GeneratorStyle,
    OutputPathGenerator,
    check_signature,
    detect_style,
    geometry_indices,
)
from eoextract.jobs._download import RemoteAsset

ROW = pd.Series({"out_prefix": "S2_10m", "out_extension": ".nc", "sample_ids": ["a", "b", "c"]}, name=4)


def seed_generator(root_folder: Path, tmp_path: Path, geometry_index: int, row: pd.Series) -> Path:
    assert tmp_path.read_bytes() == b"data"
    sample = row.sample_ids[geometry_index]
    return root_folder / sample / f"{row.out_prefix}_{sample}{row.out_extension}"


def gfmap_generator(output_dir: Path, idx: int, row: pd.Series, asset_id: str) -> Path:
    return output_dir / f"job_{row.name}" / f"{idx}_{asset_id}"


def asset(name: str) -> RemoteAsset:
    return RemoteAsset(name=name, href=f"http://127.0.0.1:1/{name}")


@pytest.fixture()
def tmp_file(tmp_path):
    path = tmp_path / "dl.nc"
    path.write_bytes(b"data")
    return path


def test_detect_style():
    assert detect_style(seed_generator) is GeneratorStyle.SEED
    assert detect_style(gfmap_generator) is GeneratorStyle.GFMAP
    assert detect_style(lambda a, b, c, d: a) is GeneratorStyle.SEED
    assert detect_style(lambda out, i, row, asset: out) is GeneratorStyle.GFMAP
    assert detect_style(functools.partial(gfmap_generator)) is GeneratorStyle.GFMAP


def test_seed_style_generator(tmp_path, tmp_file):
    root = tmp_path / "out"
    gen = OutputPathGenerator(seed_generator, root)
    choose = gen.chooser(ROW, [asset("openEO_0.nc"), asset("openEO_2.nc")])
    path = choose(asset("openEO_2.nc"), tmp_file)
    assert path == (root / "c" / "S2_10m_c.nc").resolve()
    assert "seed" in repr(gen)


def test_gfmap_style_generator(tmp_path, tmp_file):
    root = tmp_path / "out"
    gen = OutputPathGenerator(gfmap_generator, root)
    choose = gen.chooser(ROW, [asset("openEO_1.nc")])
    assert choose(asset("openEO_1.nc"), tmp_file) == (root / "job_4" / "1_openEO_1.nc").resolve()


def test_relative_result_is_taken_inside_root(tmp_path, tmp_file):
    gen = OutputPathGenerator(lambda root_folder, tmp_path, i, row: f"sub/{i}.nc", tmp_path)
    assert gen.path_for(asset("openEO_3.nc"), tmp_file, 3, ROW) == (tmp_path / "sub" / "3.nc").resolve()


@pytest.mark.parametrize(
    "result", ["../escape.nc", "/etc/passwd", "a/../../b.nc", Path("/tmp/elsewhere.nc")]
)
def test_paths_outside_root_refused(tmp_path, tmp_file, result):
    root = tmp_path / "out"
    gen = OutputPathGenerator(lambda root_folder, tmp_path, i, row: result, root)
    with pytest.raises(UnsafeAssetPath) as info:
        gen.path_for(asset("openEO_0.nc"), tmp_file, 0, ROW)
    assert info.value.asset == "openEO_0.nc"


def test_symlink_escape_refused(tmp_path, tmp_file):
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    gen = OutputPathGenerator(lambda root_folder, tmp_path, i, row: root_folder / "link" / "x.nc", root)
    with pytest.raises(UnsafeAssetPath):
        gen.path_for(asset("openEO_0.nc"), tmp_file, 0, ROW)


@pytest.mark.parametrize("result", [None, 3, ""])
def test_non_path_result_is_a_configuration_error(tmp_path, tmp_file, result):
    gen = OutputPathGenerator(lambda root_folder, tmp_path, i, row: result, tmp_path)
    with pytest.raises(ConfigurationError, match="must return a path"):
        gen.path_for(asset("openEO_0.nc"), tmp_file, 0, ROW)


def test_wrong_signature_checked_up_front(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        OutputPathGenerator(lambda root, row: root, tmp_path)
    message = str(info.value)
    assert "output_path_generator" in message
    assert "(root_folder, tmp_path, geometry_index, row)" in message
    with pytest.raises(ConfigurationError, match="must be a function"):
        OutputPathGenerator("not callable", tmp_path)


def test_check_signature():
    def post_job_action(job_items, row, parameters=None):
        return job_items

    assert check_signature(post_job_action, ["job_items", "row", "parameters"], name="post_job_action")
    assert check_signature(lambda *a, **k: None, ["a", "b"], name="cb", keywords=["provider"])
    with pytest.raises(ConfigurationError, match=r"post_job_action\(job_items, row, parameters\)"):
        check_signature(lambda items: items, ["job_items", "row", "parameters"], name="post_job_action")

    def start_job(row, connection):
        return None

    with pytest.raises(ConfigurationError, match="provider"):
        check_signature(start_job, ["row", "connection"], name="start_job", keywords=["provider"])


def test_geometry_indices_numeric_order_and_fallback():
    names = [f"openEO_{i}.nc" for i in (10, 9, 0, 1)]
    assert geometry_indices([asset(n) for n in names]) == {
        "openEO_10.nc": 10, "openEO_9.nc": 9, "openEO_0.nc": 0, "openEO_1.nc": 1
    }
    assert sorted(names, key=lambda n: geometry_indices([asset(n)])[n]) == [
        "openEO_0.nc", "openEO_1.nc", "openEO_9.nc", "openEO_10.nc"
    ]
    assert geometry_indices([asset("a.tif"), asset("b.tif")]) == {"a.tif": 0, "b.tif": 1}
    assert geometry_indices([asset("openEO_0.nc"), asset("log.json")]) == {"openEO_0.nc": 0, "log.json": None}
