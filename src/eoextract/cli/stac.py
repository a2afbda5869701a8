"""``eoextract stac build`` and ``eoextract stac validate``."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from eoextract.cli._common import EXIT_PROBLEMS, UsageError, command, console, fail, stac_app


@stac_app.command("build")
@command
def build(
    output_dir: Annotated[Path, typer.Argument(help="The extraction's output folder.")],
    collection_id: Annotated[str | None, typer.Option(help="Collection id (default: the folder's name).")] = None,
    description: Annotated[str | None, typer.Option(help="Collection description.")] = None,
    title: Annotated[str | None, typer.Option(help="Collection title.")] = None,
    catalogue_dir: Annotated[Path | None, typer.Option(help="Where the catalogue goes (default OUTPUT_DIR/stac).")] = None,
    license: Annotated[str, typer.Option(help="SPDX license id of the data.")] = "proprietary",
    validate: Annotated[bool, typer.Option(help="Validate the catalogue once built.")] = True,
) -> None:
    """(Re)build the STAC catalogue of an output folder from the items stored per job;
    validates it afterwards (exit 1 when invalid)."""
    if not output_dir.is_dir():
        raise UsageError(f"no folder {output_dir}")
    collection_id = collection_id or output_dir.resolve().name
    description = description or f"Extraction {collection_id}"
    from eoextract.report.items import ITEMS_DIR, item_files

    if not item_files(output_dir):
        fail(f"no stored items under {output_dir / ITEMS_DIR} (no finished job yet?)")
    builder = _extraction_builder()
    out = console()
    if builder is not None:
        root = Path(builder(output_dir, collection_id, description, output_path=catalogue_dir,
                            validate=False, title=title, license=license))
        out.print(f"wrote {root}")
    else:
        from eoextract.report.items import build_catalogue_from_item_files

        root, n = build_catalogue_from_item_files(
            output_dir, catalogue_dir=catalogue_dir, collection_id=collection_id,
            description=description, title=title, license=license)
        out.print(f"wrote {root} ({n} items)")
    if validate:
        _validate_and_report(root, check_assets=True, max_errors=20)


def _extraction_builder() -> Any:
    """``build_catalogue`` of the extraction package, when it is there."""
    for module in ("eoextract.extract", "eoextract.extract.manager"):
        try:
            found = getattr(importlib.import_module(module), "build_catalogue", None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


@stac_app.command("validate")
@command
def validate(
    path: Annotated[Path, typer.Argument(help="A catalogue (folder, collection.json, catalog.json) or one item/collection JSON file.")],
    check_assets: Annotated[bool, typer.Option(help="Also check that local asset files exist.")] = False,
    workers: Annotated[int | None, typer.Option(help="Processes for item validation.")] = None,
    max_errors: Annotated[int, typer.Option(help="Problems printed at most.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate a STAC catalogue or file offline (bundled schemas, links, hrefs).
    Exit 0 when valid, 1 when problems were found."""
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}")
    _validate_and_report(path, check_assets=check_assets, max_errors=max_errors,
                         workers=workers, as_json=as_json)


def _validate_and_report(path: Path, *, check_assets: bool, max_errors: int,
                         workers: int | None = None, as_json: bool = False) -> None:
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
            report = validate_catalog(path, workers=workers, check_assets=check_assets)
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
