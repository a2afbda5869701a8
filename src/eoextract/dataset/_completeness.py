"""How complete a merged point table is: samples expected (from the job database or a
list) against samples found, and rows that lack their attributes (labels)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eoextract.errors import DatasetError, IncompleteDataset

#: Sample ids listed at most in a report (the counts are always complete).
LISTED = 20


@dataclass(frozen=True)
class CompletenessReport:
    """Counts of one merge; fractions are ``0.0`` when there is nothing to compare with."""

    #: Rows written, after deduplication.
    rows: int
    #: Rows read from the files.
    rows_read: int | None
    #: Distinct samples in the merged table.
    samples_found: int
    #: Samples expected (``None`` when no expectation was given).
    samples_expected: int | None = None
    #: Expected samples with no row (at most :data:`LISTED` of them listed).
    missing_samples: tuple[str, ...] = ()
    missing_count: int = 0
    #: Rows whose attribute columns are all empty.
    rows_without_attributes: int = 0
    #: Partitions written (their values, as text).
    partitions: tuple[str, ...] = field(default=())

    @property
    def duplicates_dropped(self) -> int | None:
        """Rows read minus rows written, when the rows read are known."""
        return None if self.rows_read is None else self.rows_read - self.rows

    @property
    def missing_fraction(self) -> float:
        """Share of the expected samples that have no row."""
        return self.missing_count / self.samples_expected if self.samples_expected else 0.0

    @property
    def without_attributes_fraction(self) -> float:
        """Share of the rows without attributes."""
        return self.rows_without_attributes / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for JSON), fractions included."""
        out = asdict(self)
        out.update(missing_samples=list(self.missing_samples), partitions=list(self.partitions),
                   duplicates_dropped=self.duplicates_dropped,
                   missing_fraction=self.missing_fraction,
                   without_attributes_fraction=self.without_attributes_fraction)
        return out

    def check(self, max_missing_fraction: float | None,
              max_without_attributes_fraction: float | None) -> None:
        """Raise :class:`IncompleteDataset` when a fraction is above its threshold."""
        problems = []
        if max_missing_fraction is not None and self.missing_fraction > max_missing_fraction:
            shown = ", ".join(self.missing_samples[:5])
            problems.append(f"{self.missing_count} of {self.samples_expected} expected samples "
                            f"missing ({self.missing_fraction:.1%} > {max_missing_fraction:.1%}; "
                            f"e.g. {shown})")
        if (max_without_attributes_fraction is not None
                and self.without_attributes_fraction > max_without_attributes_fraction):
            problems.append(f"{self.rows_without_attributes} of {self.rows} rows without "
                            f"attributes ({self.without_attributes_fraction:.1%} > "
                            f"{max_without_attributes_fraction:.1%})")
        if problems:
            raise IncompleteDataset("merge refused, nothing written: " + "; ".join(problems), self)


def _ids_in_geometry(value: Any, key: str) -> list[str]:
    """Sample ids in a job row's geometry cell when it is a GeoJSON FeatureCollection (the
    per-job samples of point and patch extractions)."""
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, dict) and value.get("type") == "FeatureCollection":
        return [str(f.get("properties", {}).get(key)) for f in value.get("features", [])
                if f.get("properties", {}).get(key) is not None]
    return []


def expected_samples(job_db: str | os.PathLike[str] | Any, key: str = "sample_id"
                     ) -> list[str]:
    """The sample ids a job database expects, read through its interface.

    A job row names its samples in a ``key`` column (one id, or a list/JSON list of ids),
    or in its ``geometry`` cell as a GeoJSON FeatureCollection whose features carry
    ``key`` in their properties (the GFMAP layout).

    Args:
        job_db: A :class:`~eoextract.jobs.db.JobDatabase`, or its path/URL.
        key: The sample id column.

    Raises:
        DatasetError: No job row names any sample.
    """
    from eoextract.jobs.db import get_job_db

    db = get_job_db(job_db) if isinstance(job_db, (str, os.PathLike)) else job_db
    df = db.read()
    ids: list[str] = []
    for _, row in df.iterrows():
        if key in df.columns and row[key] is not None:
            value = row[key]
            if isinstance(value, str) and value.startswith("["):
                value = json.loads(value)
            if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
                ids.extend(str(v) for v in list(value))
            elif value == value:  # not NaN
                ids.append(str(value))
        elif "geometry" in df.columns:
            ids.extend(_ids_in_geometry(row["geometry"], key))
    if not ids:
        raise DatasetError(f"the job database names no {key!r} (neither a column nor in the "
                           f"features of its geometry)")
    return list(dict.fromkeys(ids))


def counts_query(table_sql: str, *, sample_column: str | None,
                 attributes: Sequence[str]) -> str:
    """SQL of the counts :func:`measure` takes as ``counts`` (samples found, rows without
    attributes), in one scan of ``table_sql``."""
    from eoextract.dataset._schema import sql_name

    found = f"count(DISTINCT {sql_name(sample_column)})" if sample_column is not None else "0"
    empty = " AND ".join(f"{sql_name(a)} IS NULL" for a in attributes)
    without = f"count(*) FILTER (WHERE {empty})" if attributes else "0"
    return f"SELECT {found}, {without} FROM {table_sql}"


def measure(con: Any, table_sql: str | None, *, sample_column: str | None, attributes: Sequence[str],
            expected: Iterable[str] | None, rows: int, rows_read: int | None,
            partitions: Sequence[str], counts: Sequence[int] | None = None
            ) -> CompletenessReport:
    """Count what ``table_sql`` (a DuckDB relation over the merged rows; ``None``: no
    rows) holds; ``counts``: the values of :func:`counts_query` when already run."""
    from eoextract.dataset._schema import sql_name

    found = 0
    missing: list[str] = []
    missing_count = 0
    expected_list = None if expected is None else list(dict.fromkeys(map(str, expected)))
    if table_sql is None:  # nothing merged: every expected sample is missing
        missing_count = len(expected_list or [])
        missing = (expected_list or [])[:LISTED]
    elif sample_column is not None:
        col = sql_name(sample_column)
        found = counts[0] if counts is not None else con.execute(
            f"SELECT count(DISTINCT {col}) FROM {table_sql}").fetchall()[0][0]
        if expected_list is not None:
            import pyarrow as pa

            con.register("_eoextract_expected", pa.table({"id": expected_list}))
            missing_rows = con.execute(
                f"SELECT id FROM _eoextract_expected WHERE id NOT IN "
                f"(SELECT DISTINCT CAST({col} AS VARCHAR) FROM {table_sql}) ORDER BY id").fetchall()
            con.unregister("_eoextract_expected")
            missing_count = len(missing_rows)
            missing = [r[0] for r in missing_rows[:LISTED]]
    elif expected_list is not None:
        raise DatasetError("expected samples were given but no sample column to compare with")
    without = 0
    if attributes and table_sql is not None and counts is not None:
        without = counts[1]
    elif attributes and table_sql is not None:
        empty = " AND ".join(f"{sql_name(a)} IS NULL" for a in attributes)
        without = con.execute(f"SELECT count(*) FROM {table_sql} WHERE {empty}").fetchall()[0][0]
    return CompletenessReport(
        rows=rows, rows_read=rows_read, samples_found=int(found),
        samples_expected=None if expected_list is None else len(expected_list),
        missing_samples=tuple(missing), missing_count=missing_count,
        rows_without_attributes=int(without), partitions=tuple(partitions))
