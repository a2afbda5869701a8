"""User-defined functions (run_udf, apply_neighborhood) on the embedded backend, through the
unchanged openeo client."""

from __future__ import annotations

import io
import textwrap
import time

import numpy as np
import openeo
import pytest
import xarray as xr
from api_helpers import BBOX
from openeo.rest import OpenEoApiError
from scipy import ndimage

from eoextract.backend import LocalBackend

SQRT_UDF = textwrap.dedent('''
    import numpy as np
    import xarray

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        return np.sqrt(cube.astype("float64")) * context.get("factor", 1)
''')

MAX3_UDF = textwrap.dedent('''
    import xarray
    from scipy import ndimage

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        out = ndimage.maximum_filter(cube.values, size=(1, 1, 3, 3), mode="constant", cval=0)
        return cube.copy(data=out)
''')

RAISING_UDF = textwrap.dedent('''
    import xarray

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        ratio = 1 / 0
        return cube * ratio
''')

LOOPING_UDF = textwrap.dedent('''
    import xarray

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        while True:
            pass
''')

GREEDY_UDF = textwrap.dedent('''
    import numpy as np
    import xarray

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        ballast = np.ones(200_000_000)  # 1.6 GB, over the 256 MB limit
        return cube + ballast[0]
''')


@pytest.fixture(scope="module")
def udf_backend(tmp_path_factory):
    with LocalBackend(data_dir=tmp_path_factory.mktemp("udf-backend"), workers=1,
                      udf_timeout_s=2, udf_memory_mb=256) as backend:
        yield backend


@pytest.fixture()
def con(udf_backend):
    return udf_backend.connect()


def _cube(con, bands=("B04", "B08")):
    return con.load_collection("SENTINEL2_L2A", spatial_extent=BBOX,
                               temporal_extent=["2021-06-01", "2021-06-11"], bands=list(bands))


def _download(cube) -> xr.Dataset:
    return xr.open_dataset(io.BytesIO(cube.download(format="NetCDF"))).load()


def _px(x: int, y: int) -> list[dict]:
    return [{"dimension": "x", "unit": "px", "value": x}, {"dimension": "y", "unit": "px", "value": y}]


def _wait(job, timeout=120.0) -> str:
    deadline = time.monotonic() + timeout
    while (status := job.status()) not in ("finished", "error", "canceled"):
        assert time.monotonic() < deadline, f"job still {status}"
        time.sleep(0.1)
    return status


def _run_job(cube, title: str):
    job = cube.create_job(out_format="NetCDF", title=title)
    job.start()
    return job, _wait(job)


def test_udf_runtimes_endpoint(con):
    runtimes = con.list_udf_runtimes()
    assert "Python" in runtimes and "3" in runtimes["Python"]["versions"]


def test_run_udf_equals_numpy_with_context(con):
    cube = _cube(con)
    ref = _download(cube)
    udf = openeo.UDF(SQRT_UDF, runtime="Python", context={"factor": 2})
    out = _download(cube.apply_neighborhood(process=udf, size=_px(512, 512)))
    for band in ("B04", "B08"):
        np.testing.assert_allclose(out[band].values, np.sqrt(ref[band].values.astype("float64")) * 2,
                                   rtol=1e-6)
    # the top-level process, as the client builds it
    direct = _download(cube.process("run_udf", data=cube, udf=SQRT_UDF, runtime="Python"))
    np.testing.assert_allclose(direct["B04"].values, np.sqrt(ref["B04"].values.astype("float64")),
                               rtol=1e-6)


def test_udf_from_file_in_apply_neighborhood_with_overlap_equals_numpy(con, tmp_path):
    path = tmp_path / "udf_max3.py"
    path.write_text(MAX3_UDF)
    cube = _cube(con)
    ref = _download(cube)  # 58 x 38 px: 16 px chunks do not divide it
    out = _download(cube.apply_neighborhood(process=openeo.UDF.from_file(path), size=_px(16, 16),
                                            overlap=_px(2, 2)))
    for band in ("B04", "B08"):
        values = ref[band].values  # (t, y, x)
        expected = ndimage.maximum_filter(values, size=(1, 3, 3), mode="constant", cval=0)
        np.testing.assert_array_equal(out[band].values, expected)
    # without overlap the chunk borders show: the overlap is what makes it equal
    cut = _download(cube.apply_neighborhood(process=openeo.UDF.from_file(path), size=_px(16, 16)))
    expected = ndimage.maximum_filter(ref["B04"].values, size=(1, 3, 3), mode="constant", cval=0)
    assert not np.array_equal(cut["B04"].values, expected)


def test_non_dividing_size_gives_fixed_chunks_padded_with_nodata(con):
    shape_udf = textwrap.dedent('''
        import xarray

        def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
            assert cube.sizes["y"] == 24 and cube.sizes["x"] == 24, dict(cube.sizes)
            assert list(cube.dims) == ["t", "bands", "y", "x"]
            return cube + 1
    ''')
    cube = _cube(con, bands=["B04"])
    ref = _download(cube)
    out = _download(cube.apply_neighborhood(process=openeo.UDF(shape_udf, runtime="Python"),
                                            size=_px(20, 20), overlap=_px(2, 2)))
    assert out["B04"].shape == ref["B04"].shape
    np.testing.assert_array_equal(out["B04"].values, ref["B04"].values + 1)
    np.testing.assert_array_equal(out["y"].values, ref["y"].values)


def test_apply_neighborhood_with_a_child_process_and_bad_sizes(con):
    cube = _cube(con, bands=["B04"])
    ref = _download(cube)
    out = _download(cube.apply_neighborhood(process=lambda data: data * 2, size=_px(16, 16),
                                            overlap=_px(1, 1)))
    np.testing.assert_array_equal(out["B04"].values, ref["B04"].values * 2)
    sizes = _px(16, 16) + [{"dimension": "t", "unit": None, "value": 1}]
    with pytest.raises(OpenEoApiError) as info:
        cube.apply_neighborhood(process=lambda data: data * 1, size=sizes).download(format="NetCDF")
    assert info.value.code == "ProcessParameterInvalid" and "taken whole" in info.value.message
    with pytest.raises(OpenEoApiError) as info:
        cube.apply_neighborhood(process=lambda data: data * 1, size=_px(0, 16)).download(format="NetCDF")
    assert info.value.code == "ProcessParameterInvalid"


@pytest.mark.parametrize("runtime, version, code", [
    ("R", None, "InvalidRuntime"),
    ("Python", "2.7", "InvalidVersion"),
])
def test_unknown_runtime_or_version(con, runtime, version, code):
    udf = openeo.UDF(SQRT_UDF, runtime=runtime, version=version)
    cube = _cube(con, bands=["B04"]).apply_neighborhood(process=udf, size=_px(64, 64))
    with pytest.raises(OpenEoApiError) as info:
        cube.download(format="NetCDF")
    assert info.value.code == code and info.value.http_status_code == 400
    assert con.validate_process_graph(cube)[0]["code"] == code


def test_syntax_error_fails_the_job_clearly(con, title="udf-syntax"):
    udf = openeo.UDF("def apply_datacube(cube, context:\n    return cube\n", runtime="Python")
    cube = _cube(con, bands=["B04"]).apply_neighborhood(process=udf, size=_px(64, 64))
    job, status = _run_job(cube, title)
    assert status == "error"
    message = job.logs(level="error")[-1]["message"]
    assert "SyntaxError" in message and "line 1" in message
    assert con.describe_account()["user_id"]  # the server keeps serving


def _assert_fails_alone(con, udf_code: str, needles: tuple[str, ...], title: str) -> None:
    udf = openeo.UDF(udf_code, runtime="Python")
    bad = _cube(con, bands=["B04"]).apply_neighborhood(process=udf, size=_px(64, 64))
    job, status = _run_job(bad, title)
    assert status == "error"
    text = "\n".join(e["message"] for e in job.logs())
    for needle in needles:
        assert needle in text, text
    # the next job (same single worker) still runs
    good = _cube(con, bands=["B04"]).apply_neighborhood(
        process=openeo.UDF(SQRT_UDF, runtime="Python"), size=_px(64, 64))
    _, status = _run_job(good, title + "-next")
    assert status == "finished"


def test_raising_udf_fails_only_its_job_with_traceback_in_logs(con):
    _assert_fails_alone(con, RAISING_UDF, ("The UDF raised ZeroDivisionError",
                                           "ratio = 1 / 0", "Traceback"), "udf-raises")


def test_looping_udf_is_stopped_at_its_time_limit(con):
    _assert_fails_alone(con, LOOPING_UDF, ("time limit of 2 s",), "udf-loops")


def test_greedy_udf_is_stopped_at_its_memory_limit(con):
    _assert_fails_alone(con, GREEDY_UDF, ("MemoryError", "limit 256 MB"), "udf-greedy")


def test_udfs_are_off_on_a_remote_host_unless_enabled(monkeypatch):
    from eoextract.backend import _udf
    from eoextract.backend._api_errors import ProcessUnsupported

    assert LocalBackend(host="0.0.0.0", allow_remote=True).allow_udf is False
    assert LocalBackend(host="0.0.0.0", allow_remote=True, allow_udf=True).allow_udf is True
    assert LocalBackend().allow_udf is True
    for key, value in _udf.worker_env(False).items():
        monkeypatch.setenv(key, value)
    cube = xr.DataArray(np.zeros((1, 1, 2, 2)), dims=("t", "bands", "y", "x"))
    with pytest.raises(ProcessUnsupported, match="--allow-udf"):
        _udf.run_udf(cube, SQRT_UDF, "Python")


def test_one_udf_process_per_execution_never_shared(con):
    counting_udf = textwrap.dedent('''
        import builtins
        import xarray

        def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
            builtins.udf_calls = getattr(builtins, "udf_calls", 0) + 1
            return cube * 0 + builtins.udf_calls
    ''')
    cube = _cube(con, bands=["B04"]).apply_neighborhood(
        process=openeo.UDF(counting_udf, runtime="Python"), size=_px(20, 64))
    for _ in range(2):  # a second execution starts from a fresh process
        out = _download(cube)["B04"].values
        # 38 px wide: two chunks, called in order in the same process
        assert (out[..., :20] == 1).all() and (out[..., 20:] == 2).all()


def test_apply_timeseries_and_udfdata_signatures(con):
    timeseries_udf = textwrap.dedent('''
        import pandas as pd

        def apply_timeseries(series: pd.Series, context: dict) -> pd.Series:
            return series - series.mean()
    ''')
    udfdata_udf = textwrap.dedent('''
        from openeo.udf import UdfData, XarrayDataCube

        def transform(data: UdfData):
            cube = data.get_datacube_list()[0].get_array()
            data.set_datacube_list([XarrayDataCube(cube * 3)])
    ''')
    cube = _cube(con, bands=["B04"])
    ref = _download(cube)["B04"].values.astype("float64")
    out = _download(cube.process("run_udf", data=cube, udf=timeseries_udf, runtime="Python"))
    np.testing.assert_allclose(out["B04"].values, ref - ref.mean(axis=0), rtol=1e-5, atol=1e-3)
    out = _download(cube.process("run_udf", data=cube, udf=udfdata_udf, runtime="Python"))
    np.testing.assert_array_equal(out["B04"].values, ref * 3)


DISTANCE_UDF = textwrap.dedent('''
    import numpy as np
    import xarray
    from scipy import ndimage

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        cloud = np.isin(cube.values, [3, 8, 9, 10])
        out = np.full(cube.shape, 255.0, dtype="float32")
        for idx in np.ndindex(cube.shape[:-2]):
            if cloud[idx].any():
                out[idx] = np.minimum(ndimage.distance_transform_edt(~cloud[idx]), 255.0)
        return cube.copy(data=out)
''')


def test_notebook_004_masks_and_distance_to_cloud_per_feature(con, tmp_path):
    """The notebook's cube: SCL dilation mask, distance-to-cloud UDF from a file through
    apply_neighborhood, merge_cubes, one NetCDF per feature."""
    path = tmp_path / "udf_distance_to_cloud.py"
    path.write_text(DISTANCE_UDF)
    squares = []
    for i in range(2):
        w, s = 640_000.0 + 2000 * i, 5_652_000.0
        squares.append({"type": "Feature", "properties": {"id": i}, "geometry": {
            "type": "Polygon", "coordinates": [[[w, s], [w + 640, s], [w + 640, s + 640],
                                                [w, s + 640], [w, s]]]}})
    geometry = {"type": "FeatureCollection", "features": squares,
                "crs": {"type": "name", "properties": {"name": "EPSG:32631"}}}
    cube = con.load_collection("SENTINEL2_L2A", temporal_extent=["2021-06-01", "2021-06-21"],
                               bands=["B04", "SCL"]).filter_spatial(geometry)
    mask = cube.process("to_scl_dilation_mask", data=cube, scl_band_name="SCL", kernel1_size=17,
                        kernel2_size=77, mask1_values=[2, 4, 5, 6, 7], mask2_values=[3, 8, 9, 10, 11],
                        erosion_kernel_size=3).rename_labels("bands", ["S2-L2A-SCL_DILATED_MASK"])
    cube = cube.merge_cubes(mask)
    distance = cube.filter_bands(["SCL"]).apply_neighborhood(
        process=openeo.UDF.from_file(path),
        size=[{"dimension": "x", "unit": "px", "value": 256}, {"dimension": "y", "unit": "px", "value": 256}],
        overlap=[{"dimension": "x", "unit": "px", "value": 16}, {"dimension": "y", "unit": "px", "value": 16}],
    ).rename_labels("bands", ["S2-L2A-DISTANCE-TO-CLOUD"])
    cube = cube.merge_cubes(distance).linear_scale_range(0, 65534, 0, 65534)
    job = cube.create_job(out_format="NetCDF", title="notebook-004", sample_by_feature=True)
    job.start()
    assert _wait(job) == "finished", job.logs(level="error")
    files = job.get_results().download_files(tmp_path / "out")
    ncs = sorted(f for f in files if f.suffix == ".nc")
    assert len(ncs) == 2
    for f in ncs:
        with xr.open_dataset(f) as ds:
            assert {"B04", "SCL", "S2-L2A-SCL_DILATED_MASK", "S2-L2A-DISTANCE-TO-CLOUD"} <= set(ds.data_vars)
            assert ds.sizes["x"] == 64 and ds.sizes["y"] == 64
            scl = np.nan_to_num(ds["SCL"].values, nan=0)
            dist = ds["S2-L2A-DISTANCE-TO-CLOUD"].values
            cloud = np.isin(scl, [3, 8, 9, 10])
            if cloud.any():  # distance 0 on clouds (stored as no-data by the writer)
                assert np.all(np.nan_to_num(dist[cloud], nan=0) == 0)
