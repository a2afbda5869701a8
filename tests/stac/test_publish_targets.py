"""The one dispatcher of publication targets (library and command line), the neutral result
it returns, and stac's independence of jobs and extractions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from publish_fixtures import make_output

import eoextract.stac
from eoextract.errors import ConfigurationError
from eoextract.stac.publish import (
    TARGETS,
    PublishResult,
    PublishTarget,
    export_geoparquet,
    load_into_pgstac,
    publish,
    publish_to_s3,
    publish_to_stac_api,
)
from eoextract.stac.publish._targets import target_for


@pytest.mark.parametrize(("url", "function"), [
    ("s3://bucket/prefix", publish_to_s3),
    ("S3://bucket", publish_to_s3),
    ("https://stac.example.org", publish_to_stac_api),
    ("http://127.0.0.1:8080/api", publish_to_stac_api),
    ("postgresql://u:p@host/db", load_into_pgstac),
    ("postgresql+psycopg://u:p@host/db", load_into_pgstac),
    ("postgres://host/db", load_into_pgstac),
])
def test_scheme_picks_the_target(url, function):
    assert target_for(url).function is function


def test_kind_picks_the_target_and_unknown_ones_are_refused():
    assert target_for("items.parquet", "geoparquet").function is export_geoparquet
    assert target_for("anything", "stac-api").function is publish_to_stac_api
    assert set(TARGETS) == {"s3", "stac-api", "pgstac", "geoparquet"}
    for url in ("ftp://host/x", "items.parquet", "/data/catalogue"):
        with pytest.raises(ConfigurationError, match="s3://bucket/prefix"):
            publish("catalogue", url)
    with pytest.raises(ConfigurationError, match="unknown publish target kind 'nope'"):
        publish("catalogue", "s3://b/p", kind="nope")


def _recording_target(monkeypatch, kind: str, schemes: tuple[str, ...], failed: list[str]):
    calls: list[tuple] = []

    def fake(catalog_dir, target, **options):
        calls.append((catalog_dir, target, options))
        from eoextract.stac.publish import walk_catalog

        ids = [e.data["id"] for e in walk_catalog(catalog_dir) if e.kind == "item"]
        return PublishResult(target=str(target), n_items=len(ids),
                             published_items=[i for i in ids if i not in failed],
                             failed_items=list(failed))

    monkeypatch.setitem(TARGETS, kind, PublishTarget(kind, schemes, fake))
    return calls


def test_library_and_cli_share_the_dispatcher_and_mark_jobs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from eoextract.cli import app
    from eoextract.extract import publish_catalogue
    from eoextract.jobs.db import create_job_db, get_job_db

    out = tmp_path / "out"
    root = make_output(out, n_jobs=3, items_per_job=2)
    keys = ["job-000", "job-001", "job-002"]
    create_job_db(tmp_path / "jobs.db",
                  pd.DataFrame({"x": [1, 2, 3]}, index=pd.Index(keys, name="job_key"))).close()
    calls = _recording_target(monkeypatch, "s3", ("s3",), failed=["job-001_000"])

    # the library: options go through untouched; a job with a failed item is not marked
    result = publish_catalogue(out, "s3://bucket/run", job_db=tmp_path / "jobs.db", workers=3)
    assert calls[-1] == (root, "s3://bucket/run", {"workers": 3})
    assert result.failed_items == ["job-001_000"]
    assert result.jobs_marked == ["job-000", "job-002"]
    assert "2 job(s) marked published" in result.summary()

    # the command line: the same dispatcher, its flags mapped onto the target's options
    cli = CliRunner().invoke(app, ["stac", "publish", str(out), "--to", "s3://bucket/cli",
                                   "--workers", "5", "--job-db", str(tmp_path / "jobs.db")])
    assert cli.exit_code == 0, cli.output
    assert calls[-1] == (root, "s3://bucket/cli", {
        "endpoint_url": None, "workers": 5, "absolute_asset_urls": False, "public_url": None})
    assert "0 job(s) marked published" in cli.output  # the first publication time is kept
    with get_job_db(tmp_path / "jobs.db") as db:
        published = db.read()["output_published_at"]
    assert published[["job-000", "job-002"]].notna().all() and pd.isna(published["job-001"])

    pg_calls = _recording_target(monkeypatch, "pgstac", ("postgresql",), failed=[])
    cli = CliRunner().invoke(app, ["stac", "publish", str(out), "--pgstac", "postgresql://h/db",
                                   "--no-upsert", "--asset-base-url", "https://x.org/out"])
    assert cli.exit_code == 0, cli.output
    assert pg_calls[-1][2] == {"method": "insert_ignore", "asset_base_url": "https://x.org/out"}


def _imports(path: Path) -> list[str]:
    """Every module an imported name comes from in a file (also inside functions)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_stac_imports_nothing_of_jobs_or_extract():
    package = Path(eoextract.stac.__file__).parent
    offending = {
        f"{path.relative_to(package)}: {name}"
        for path in package.rglob("*.py") for name in _imports(path)
        if name.startswith(("eoextract.jobs", "eoextract.extract"))
    }
    assert not offending
    code = ("import sys, eoextract.stac, eoextract.stac.publish; print([m for m in sys.modules"
            " if m.startswith(('eoextract.jobs', 'eoextract.extract'))])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert loaded.stdout.strip() == "[]"


def test_every_stac_module_is_private():
    package = Path(eoextract.stac.__file__).parent
    public = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
              if p.name != "__init__.py" and not p.name.startswith("_")]
    assert public == []
    for module in (eoextract.stac, eoextract.stac.publish):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
