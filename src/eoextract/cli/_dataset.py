"""``eoextract dataset ...``: training data from an extraction's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from eoextract.cli._common import app, command, console

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
    as_json: Annotated[bool, typer.Option("--json", help="Print the completeness report as JSON.")] = False,
) -> None:
    """Merge per-job point files into one Hive-partitioned GeoParquet dataset (deduplicated,
    typed, partitions replaced atomically) and print its completeness report; exit 1 when
    a threshold is exceeded (nothing is written then)."""
    from eoextract.dataset import merge_points
    from eoextract.errors import IncompleteDataset

    try:
        report = merge_points(
            sources, output, partition_by=partition_by, key=_split(key) or ("sample_id", "timestamp"),
            time_column=time_column, bands=_split(band), band_type=band_type, nodata=nodata,
            attributes=_split(attribute), sample_column=sample_column, expected=expected_from,
            max_missing_fraction=max_missing_fraction,
            max_without_attributes_fraction=max_without_attributes_fraction)
    except IncompleteDataset as exc:
        if as_json:
            typer.echo(json.dumps(exc.report.to_dict(), indent=2))  # type: ignore[attr-defined]
        raise
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
