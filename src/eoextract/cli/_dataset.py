"""``eoextract dataset ...``: from catalogue to training data."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Annotated

import typer

from eoextract.cli._common import UsageError, app, command, console, open_db

dataset_app = typer.Typer(help="Training data from an extraction: point tables, collections.",
                          no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


# -- point tables ------------------------------------------------------------------------

@dataset_app.command("points")
@command
def points(
    sources: Annotated[list[Path], typer.Argument(help="Point files, output folders or a catalogue (collection.json or its folder).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The dataset's folder (Hive partitions).")],
    partition_by: Annotated[str, typer.Option(help="Partition column (e.g. ref_id, a tile column), or year/month from the time column.")],
    key: Annotated[list[str] | None, typer.Option(help="Columns that identify a row (repeat or comma-separate); default sample_id,timestamp.")] = None,
    time_column: Annotated[str, typer.Option(help="Column stored as a UTC timestamp.")] = "timestamp",
    band: Annotated[list[str] | None, typer.Option("--band", help="Columns stored as compact integers (repeat or comma-separate).")] = None,
    band_type: Annotated[str, typer.Option(help="uint8, int8, uint16, int16, uint32 or int32.")] = "uint16",
    nodata: Annotated[int | None, typer.Option(help="Value of an empty band value.")] = None,
    attribute: Annotated[list[str] | None, typer.Option("--attribute", help="Label columns; rows with all of them empty are counted.")] = None,
    sample_column: Annotated[str, typer.Option(help="The sample id column.")] = "sample_id",
    expected_from: Annotated[str | None, typer.Option(help="Job database (path or URL) listing the samples expected.")] = None,
    max_missing_fraction: Annotated[float | None, typer.Option(help="Refuse the merge when more of the expected samples are missing (e.g. 0.25).")] = None,
    max_without_attributes_fraction: Annotated[float | None, typer.Option(help="Refuse the merge when more rows lack attributes.")] = None,
    compression: Annotated[str, typer.Option(help="Parquet compression: snappy, zstd, lz4_raw, gzip, brotli or uncompressed.")] = "snappy",
    parquet_version: Annotated[str, typer.Option(help="v2 (data pages v2, integer bands delta-encoded) or v1 (for readers that predate Parquet 2 encodings).")] = "v2",
    as_json: Annotated[bool, typer.Option("--json", help="Print the completeness report as JSON.")] = False,
) -> None:
    """Merge per-job point files into one Hive-partitioned GeoParquet dataset (deduplicated,
    typed, partitions replaced atomically) and print its completeness report; exit 1 when
    a threshold is exceeded (nothing is written then)."""
    from eoextract.dataset import merge_points
    from eoextract.errors import IncompleteDataset

    expected = open_db(expected_from) if expected_from is not None else None
    try:
        report = merge_points(
            sources, output, partition_by=partition_by, key=_split(key) or ("sample_id", "timestamp"),
            time_column=time_column, bands=_split(band), band_type=band_type, nodata=nodata,
            attributes=_split(attribute), sample_column=sample_column, expected=expected,
            max_missing_fraction=max_missing_fraction,
            max_without_attributes_fraction=max_without_attributes_fraction, compression=compression,
            parquet_version=parquet_version)
    except IncompleteDataset as exc:
        if as_json:
            typer.echo(json.dumps(exc.report.to_dict(), indent=2))  # type: ignore[attr-defined]
        raise
    finally:
        if expected is not None:
            expected.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    out = console()
    dropped = report.duplicates_dropped
    out.print(f"wrote {report.rows:,} rows in {len(report.partitions)} partition(s) of "
              f"{partition_by} to {output}")
    out.print(f"samples found {report.samples_found:,}"
              + (f", expected {report.samples_expected:,}, missing {report.missing_count:,} "
                 f"({report.missing_fraction:.1%})" if report.samples_expected is not None else ""))
    if dropped is not None:
        out.print(f"duplicates dropped {dropped:,}")
    if attribute:
        out.print(f"rows without attributes {report.rows_without_attributes:,} "
                  f"({report.without_attributes_fraction:.1%})")


# -- end of point tables -----------------------------------------------------------------


# -- patch to point ----------------------------------------------------------------------

@dataset_app.command("patches-to-points")
@command
def patches_to_points_cmd(
    catalogue: Annotated[Path, typer.Argument(help="A catalogue (folder, collection.json, an output folder) or a stac-geoparquet file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The GeoParquet file written.")],
    how: Annotated[str, typer.Option(help="centre (the centre pixel), mean (over the sample polygon) or all (every pixel inside).")] = "centre",
    label: Annotated[list[str] | None, typer.Option("--label", help="Label columns from item properties or the auxiliary asset (repeat or comma-separate).")] = None,
    processes: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: all cores; 1: this process only).")] = None,
    dask: Annotated[str | None, typer.Option(
        help="Sample on the Dask cluster of this scheduler address (tcp://host:port) instead; "
             "its workers must reach the patch files by the same paths.")] = None,
) -> None:
    """Sample each patch of a catalogue at its sample's geometry into one long GeoParquet
    table (sample_id, time, bands, labels) and print a summary."""
    from eoextract.dataset import patches_to_points
    from eoextract.dataset._patch_points import EMPTY_LABELS_NOTE

    if how not in ("centre", "mean", "all"):
        raise UsageError(f"--how must be centre, mean or all, not {how!r}")
    if not catalogue.exists():
        raise UsageError(f"no such file or folder: {catalogue}")
    with warnings.catch_warnings():  # said below, without a source line
        warnings.filterwarnings("ignore", message=r"label\(s\) .* " + re.escape(EMPTY_LABELS_NOTE),
                                category=UserWarning)
        result = patches_to_points(catalogue, output, how=how, labels=_split(label),
                                   processes=processes, client=dask)
    skipped = f", {result.skipped} sample(s) skipped" if result.skipped else ""
    out = console()
    out.print(f"wrote {result.rows:,} rows from {result.patches} patch(es) to {result.path}{skipped}")
    if result.empty_labels:
        out.print(f"label(s) {', '.join(result.empty_labels)} {EMPTY_LABELS_NOTE}")


# --------------------------------------------------------------------------- per-EPSG collections, info


@dataset_app.command("split-epsg")
@command
def split_epsg(
    catalogue: Annotated[Path, typer.Argument(help="A catalogue (folder, collection.json, catalog.json, an output folder) or a stac-geoparquet file.")],
    output_dir: Annotated[Path, typer.Argument(help="Folder of the new catalogue (an earlier split there is replaced).")],
    by: Annotated[str, typer.Option(help="'epsg': one collection per EPSG code; 'tile': per EPSG code and Sentinel-2 tile.")] = "epsg",
    collection_id: Annotated[str | None, typer.Option(help="Prefix of the new collection ids (default: the items' collection).")] = None,
    absolute_hrefs: Annotated[bool, typer.Option(help="Absolute asset hrefs instead of relative ones.")] = False,
    geoparquet: Annotated[bool, typer.Option(help="Also write a stac-geoparquet file per collection.")] = True,
    validate: Annotated[bool, typer.Option(help="Validate the new catalogue before it replaces anything.")] = True,
) -> None:
    """Split a catalogue into one collection per projection (or per projection and tile),
    pointing at the original data files; prints one line per collection."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from eoextract.dataset import split_by_epsg

    if by not in ("epsg", "tile"):
        raise UsageError(f"--by must be 'epsg' or 'tile', not {by!r}")
    if not catalogue.exists():
        raise UsageError(f"no such file or folder: {catalogue}")
    err = console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("splitting", total=None)
        result = split_by_epsg(catalogue, output_dir, by=by, collection_id=collection_id,  # type: ignore[arg-type]
                               relative_hrefs=not absolute_hrefs, geoparquet=geoparquet,
                               validate=validate,
                               progress=lambda n: bar.update(task, description=f"{n} item(s)"))
    out = console()
    for name, path in result.collections.items():
        extra = f", {result.geoparquet[name].name}" if name in result.geoparquet else ""
        out.print(f"{name}: {result.n_items[name]} item(s) in {path.parent.name}/{extra}")
    out.print(f"wrote {result.root}: {sum(result.n_items.values())} item(s) in "
              f"{len(result.collections)} collection(s)")


@dataset_app.command("info")
@command
def info(
    catalogue: Annotated[Path, typer.Argument(help="A catalogue (folder, collection.json, catalog.json, an output folder) or a stac-geoparquet file.")],
    label: Annotated[str | None, typer.Option(help="Item property whose values are counted.")] = None,
    epsg: Annotated[list[int] | None, typer.Option(help="Only items of this EPSG code (repeatable).")] = None,
    tile: Annotated[list[str] | None, typer.Option(help="Only items of this Sentinel-2 tile (repeatable).")] = None,
    start: Annotated[str | None, typer.Option(help="Only items ending at or after this date.")] = None,
    end: Annotated[str | None, typer.Option(help="Only items starting at or before this date.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Count the items of a catalogue per collection, EPSG code and label; time range and
    bytes of the files (from the items' file:size; no data file is opened)."""
    from eoextract.dataset import dataset_info

    if not catalogue.exists():
        raise UsageError(f"no such file or folder: {catalogue}")
    found = dataset_info(catalogue, label=label, epsg=epsg or None, tiles=tile or None,
                         start=start, end=end)
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    out = console()
    out.print(f"items: {found.n_items}")
    for title, counts in (("collection", found.per_collection), ("EPSG", found.per_epsg),
                          (f"label {label}", found.per_label)):
        for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            out.print(f"  {title} {key if key is not None else '(none)'}: {n}")
    if label is not None and found.n_items and set(found.per_label) == {None}:
        out.print(f"  (no item has the property {label!r})")
    span = (f"{found.start.isoformat()} .. {found.end.isoformat()}" if found.start and found.end
            else "unknown")
    out.print(f"time: {span}")
    unsized = f" ({found.n_unsized} without file:size)" if found.n_unsized else ""
    out.print(f"files: {found.n_files}, {found.total_bytes} bytes "
              f"({found.total_bytes / 2**20:.1f} MiB){unsized}")
