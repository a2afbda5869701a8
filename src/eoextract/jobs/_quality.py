"""Quality gates: checks of a finished job's results before it counts as ``finished``.

A manager's ``quality_checks=[...]`` run on every finished job once its files are in place
(and, for extractions, before any item is stored). A failing check makes the job fail with
the class ``QualityCheck.<name>`` and its message; a check with ``retry=True`` runs the job
again on its backend instead (up to ``max_attempts``). Checks are plain objects: subclass
:class:`QualityCheck` and implement :meth:`~QualityCheck.problem` for your own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract.errors import QualityCheckFailed


@dataclass(frozen=True)
class JobOutput:
    """What a quality check sees of one finished job.

    Attributes:
        job_key: The job's key.
        row: The job's row (user columns and managed fields, e.g. ``usage`` as JSON).
        files: The result files placed for the job.
    """

    job_key: str
    row: Mapping[str, Any]
    files: Sequence[Path]

    @property
    def usage(self) -> dict[str, Any]:
        """The usage the backend reported (``{"cpu": {"value": 12, "unit": ...}, ...}``)."""
        raw = self.row.get("usage")
        try:
            return json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:
            return {}


@dataclass(frozen=True)
class QualityCheck:
    """A check of a finished job's results.

    Attributes:
        retry: Run the job again when the check fails (else the job ends in ``error``).
    """

    retry: bool = field(default=False, kw_only=True)

    @property
    def name(self) -> str:
        """The check's name, in the error class ``QualityCheck.<name>``."""
        return type(self).__name__

    def problem(self, output: JobOutput) -> str | None:
        """What is wrong with the job's results, or None when they pass."""
        raise NotImplementedError


@dataclass(frozen=True)
class ExpectedAssets(QualityCheck):
    """The number of result files: ``count``, or one per feature of the row's geometry
    (a GeoJSON FeatureCollection, as extraction rows carry) whose ``feature_flag`` property
    is true (``per_feature=True``; all features when ``feature_flag`` is None)."""

    count: int | None = None
    per_feature: bool = False
    feature_flag: str | None = "extract"
    suffixes: tuple[str, ...] = (".nc", ".tif", ".tiff", ".parquet", ".json", ".csv")

    def problem(self, output: JobOutput) -> str | None:
        files = [f for f in output.files if f.suffix.lower() in self.suffixes]
        expected = self.count
        if self.per_feature:
            expected = _feature_count(output.row.get("geometry"), self.feature_flag)
        if expected is not None and len(files) != expected:
            return f"{len(files)} result file(s), {expected} expected"
        return None


@dataclass(frozen=True)
class UsageAtMost(QualityCheck):
    """A usage value the backend reported (e.g. WorldCereal's soft-error fraction) stays at
    or below ``maximum``; a job that did not report it passes."""

    key: str = "soft_errors"
    maximum: float = 0.3

    def problem(self, output: JobOutput) -> str | None:
        entry = output.usage.get(self.key)
        value = entry.get("value") if isinstance(entry, Mapping) else entry
        if value is not None and float(value) > self.maximum:
            return f"usage {self.key} is {value}, above {self.maximum}"
        return None


@dataclass(frozen=True)
class ArrayCheck(QualityCheck):
    """Each raster result (NetCDF, GeoTIFF) opens, has the ``dims`` and ``sizes`` asked for,
    a ``dtype``, and at most ``max_nodata`` of its values missing (NaN or the nodata value)."""

    dims: tuple[str, ...] | None = None
    sizes: Mapping[str, int] = field(default_factory=dict)
    dtype: str | None = None
    max_nodata: float | None = None

    def problem(self, output: JobOutput) -> str | None:
        for path in output.files:
            if path.suffix.lower() not in (".nc", ".tif", ".tiff"):
                continue
            try:
                found = _array_problem(path, self)
            except Exception as exc:  # noqa: BLE001 - a file that does not open fails the check
                return f"{path.name} does not open: {exc}"
            if found:
                return f"{path.name}: {found}"
        return None


def run_checks(checks: Iterable[QualityCheck], output: JobOutput) -> None:
    """Run ``checks`` in order; raise :class:`~eoextract.errors.QualityCheckFailed` at the first failing one."""
    for check in checks:
        message = check.problem(output)
        if message:
            raise QualityCheckFailed(f"job {output.job_key}: quality check {check.name} failed: {message}",
                                     check=check.name, retry=check.retry, job_key=output.job_key)


def gate(checks: Sequence[QualityCheck], output: JobOutput) -> QualityCheckFailed | None:
    """Run ``checks``: None when they pass, the failure of a check with ``retry=True`` (the
    job runs again), or raise the failure of any other check (the job ends in ``error``)."""
    try:
        run_checks(checks, output)
    except QualityCheckFailed as exc:
        if exc.retry:
            return exc
        raise
    return None


def _feature_count(geometry: Any, flag: str | None) -> int | None:
    if isinstance(geometry, str):
        try:
            geometry = json.loads(geometry)
        except ValueError:
            return None
    if not isinstance(geometry, Mapping) or geometry.get("type") != "FeatureCollection":
        return None
    features = geometry.get("features") or []
    return sum(1 for f in features if flag is None or (f.get("properties") or {}).get(flag))


def _array_problem(path: Path, check: ArrayCheck) -> str | None:
    import numpy as np
    import xarray as xr

    if path.suffix.lower() == ".nc":
        ds = xr.open_dataset(path, mask_and_scale=True)
        arrays = [ds[v] for v in ds.data_vars if ds[v].ndim >= 2]
    else:
        import rioxarray  # noqa: F401 - registers the rasterio engine

        ds = xr.open_dataset(path, engine="rasterio", mask_and_scale=True)
        arrays = [ds[v] for v in ds.data_vars]
    try:
        for array in arrays:
            if check.dims is not None and tuple(d for d in array.dims if d in check.dims) != tuple(check.dims):
                return f"{array.name} has dims {array.dims}, {check.dims} expected"
            for dim, size in check.sizes.items():
                if array.sizes.get(dim) != size:
                    return f"{array.name} has {array.sizes.get(dim)} along {dim}, {size} expected"
            if check.dtype is not None and str(array.encoding.get("dtype", array.dtype)) != check.dtype:
                return f"{array.name} is {array.encoding.get('dtype', array.dtype)}, {check.dtype} expected"
            if check.max_nodata is not None and array.size:
                missing = float(np.isnan(array.values.astype("float64")).mean())
                if missing > check.max_nodata:
                    return f"{array.name} is {missing:.0%} nodata, at most {check.max_nodata:.0%} allowed"
        return None
    finally:
        ds.close()
