"""``eoextract stac build|validate|publish|export-geoparquet``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from eoextract.cli._common import (
    EXIT_PROBLEMS,
    UsageError,
    command,
    console,
    fail,
    open_db,
    redact,
    stac_app,
)


@stac_app.command("build")
@command
def build(
    output_dir: Annotated[Path, typer.Argument(help="The extraction's output folder.")],
    collection_id: Annotated[str | None, typer.Option(help="Collection id (default: the one the manager recorded, else the folder's name).")] = None,
    description: Annotated[str | None, typer.Option(help="Collection description (default: the recorded one).")] = None,
    title: Annotated[str | None, typer.Option(help="Collection title.")] = None,
    catalogue_dir: Annotated[Path | None, typer.Option(help="Where the catalogue goes (default OUTPUT_DIR/stac).")] = None,
    license: Annotated[str, typer.Option(help="SPDX license id of the data.")] = "proprietary",
    validate: Annotated[bool, typer.Option(help="Validate the catalogue once built.")] = True,
) -> None:
    """(Re)build the STAC catalogue of an output folder from the items stored per job;
    validates it afterwards (exit 1 when invalid)."""
    from eoextract.extract import ItemStore, build_catalogue

    if not output_dir.is_dir():
        raise UsageError(f"no folder {output_dir}")
    store = ItemStore(output_dir)
    if not store:
        fail(f"no stored items under {store.items_dir} (no finished job yet?)")
    if not (collection_id or store.settings().get("collection_id")):
        collection_id = output_dir.resolve().name
    root = build_catalogue(output_dir, collection_id, description, output_path=catalogue_dir,
                           validate=False, title=title, license=license)
    console().print(f"wrote {root}")
    if validate:
        _validate_and_report(root, check_assets=True, max_errors=20)


@stac_app.command("validate")
@command
def validate(
    path: Annotated[Path, typer.Argument(help="A catalogue (folder, collection.json, catalog.json, an output folder with it in stac/) or one item/collection JSON file.")],
    check_assets: Annotated[bool, typer.Option(help="Also check that local asset files exist and match their file:size and file:checksum (mismatches reported per asset).")] = False,
    workers: Annotated[int | None, typer.Option(help="Processes for item validation.")] = None,
    max_errors: Annotated[int, typer.Option(help="Problems printed at most.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate a STAC catalogue or file offline (bundled schemas, links, hrefs).
    Exit 0 when valid, 1 when problems were found."""
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}")
    roots = ("collection.json", "catalog.json")
    if path.is_dir() and not any((path / r).is_file() for r in roots) \
            and any((path / "stac" / r).is_file() for r in roots):
        path = path / "stac"  # an extraction's output folder
    elif path.suffix in (".parquet", ".geoparquet"):
        raise UsageError(f"{path} is a Parquet file; validate the catalogue it was made from "
                         "(or read it with 'eoextract dataset info')")
    _validate_and_report(path, check_assets=check_assets, max_errors=max_errors,
                         workers=workers, as_json=as_json, check_checksums=check_assets)


def _validate_and_report(path: Path, *, check_assets: bool, max_errors: int,
                         workers: int | None = None, as_json: bool = False,
                         check_checksums: bool = False) -> None:
    from eoextract.stac import validate_catalog, validate_dict

    single = path.is_file() and path.name not in ("collection.json", "catalog.json")
    if single:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
        if isinstance(data, dict) and data.get("type") in ("Catalog", "Collection"):
            single = False
    if single:
        messages = [f"{path}: {m}" for m in validate_dict(data)]
        counts = {"files": 1}
    else:
        try:
            report = validate_catalog(path, workers=workers, check_assets=check_assets,
                                      check_checksums=check_checksums)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from exc
        messages = report.messages()
        counts = {"collections": report.n_collections, "catalogs": report.n_catalogs,
                  "items": report.n_items}
    if as_json:
        typer.echo(json.dumps({"path": str(path), "valid": not messages, **counts,
                               "errors": messages}, indent=2))
    else:
        what = ", ".join(f"{n} {k}" for k, n in counts.items())
        if messages:
            for line in messages[:max_errors]:
                typer.echo(line, err=True)
            if len(messages) > max_errors:
                typer.echo(f"... and {len(messages) - max_errors} more", err=True)
            typer.echo(f"error: invalid: {len(messages)} problem(s) in {path} ({what})", err=True)
        else:
            console().print(f"valid: {path} ({what})")
    if messages:
        raise typer.Exit(EXIT_PROBLEMS)


@stac_app.command("publish")
@command
def publish(
    output_dir: Annotated[Path, typer.Argument(help="The extraction's output folder (catalogue in OUTPUT_DIR/stac) or a catalogue.")],
    to: Annotated[str | None, typer.Option("--to", help="Upload to object storage: s3://bucket/prefix.")] = None,
    stac_api: Annotated[str | None, typer.Option("--stac-api", help="Load into a STAC API with transactions (its URL).")] = None,
    pgstac: Annotated[str | None, typer.Option("--pgstac", help="Load into a pgstac database (postgresql:// DSN).")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint (default AWS or AWS_ENDPOINT_URL).")] = None,
    absolute_asset_urls: Annotated[bool, typer.Option(help="Uploaded items point at their assets by absolute URL.")] = False,
    public_url: Annotated[str | None, typer.Option(help="Public HTTP(S) URL of the s3 prefix (self link, asset URLs).")] = None,
    asset_base_url: Annotated[str | None, typer.Option(help="STAC API/pgstac: URL of the published output folder for asset hrefs.")] = None,
    job_db: Annotated[str | None, typer.Option(help="Job database: set output_published_at on the published jobs.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel uploads (s3).")] = 64,
    upsert: Annotated[bool, typer.Option(help="Replace existing collection and items (STAC API, pgstac).")] = True,
    token_env: Annotated[str | None, typer.Option(help="Environment variable holding a bearer token for the STAC API.")] = None,
) -> None:
    """Publish a catalogue: upload it with its assets to S3 (incremental, verified), or
    load it into a STAC API or pgstac. Credentials come from the environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...). Exit 1 when objects failed."""
    from eoextract.extract import publish_catalogue

    given = [(kind, url) for kind, url in (("s3", to), ("stac-api", stac_api), ("pgstac", pgstac))
             if url]
    if len(given) != 1:
        raise UsageError("give exactly one of --to, --stac-api, --pgstac")
    kind, url = given[0]
    root = _catalogue_root(output_dir)
    db = open_db(job_db) if job_db is not None else None
    if kind == "s3":
        options: dict[str, Any] = dict(endpoint_url=endpoint_url, workers=workers,
                                       absolute_asset_urls=absolute_asset_urls,
                                       public_url=public_url)
    elif kind == "stac-api":
        token = os.environ.get(token_env) if token_env else None
        if token_env and not token:
            raise UsageError(f"environment variable {token_env} is not set")
        options = dict(upsert=upsert, auth=token, asset_base_url=asset_base_url)
    else:
        options = dict(method="upsert" if upsert else "insert_ignore",
                       asset_base_url=asset_base_url)
    try:
        result = publish_catalogue(root, url, kind=kind, job_db=db, **options)
    finally:
        if db is not None:
            db.close()
    console().print(f"published {redact(result.summary())}")
    if result.root_url:
        console().print(f"root: {redact(result.root_url)}")
    if result.errors:
        for line in result.errors[:20]:
            typer.echo(redact(line), err=True)
        fail(f"{len(result.errors)} object(s) could not be published; run again to retry them")


def _catalogue_root(path: Path) -> Path:
    """The root document of the catalogue at ``path`` (see ``find_root``)."""
    from eoextract.stac.publish import find_root

    try:
        return find_root(path)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc


@stac_app.command("export-geoparquet")
@command
def export_geoparquet(
    output_dir: Annotated[Path, typer.Argument(help="The extraction's output folder (catalogue in OUTPUT_DIR/stac) or a catalogue.")],
    output: Annotated[Path, typer.Argument(help="The stac-geoparquet file to write.")],
    asset_base_url: Annotated[str | None, typer.Option(help="URL of the published output folder for asset hrefs (default: local paths).")] = None,
) -> None:
    """Write every item of a catalogue into one stac-geoparquet file."""
    from eoextract.stac.publish import publish

    result = publish(_catalogue_root(output_dir), output, kind="geoparquet",
                     asset_base_url=asset_base_url)
    console().print(f"wrote {output} ({result.n_items} items, {result.n_bytes / 2**20:.1f} MiB)")
