"""The public surface of eoextract.jobs and eoextract.extract, and the layout behind it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import eoextract

SRC = Path(eoextract.__file__).parent


@pytest.mark.parametrize("package", ["eoextract.jobs", "eoextract.extract"])
def test_public_names_resolve_and_modules_are_private(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    folder = SRC.joinpath(*package.split(".")[1:])
    public = {"__init__.py", "status.py"}  # jobs.status: the status model, imported on its own
    for path in folder.rglob("*.py"):
        relative = path.relative_to(folder)
        if relative.parts[0] == "db":
            continue  # eoextract.jobs.db is a public package of its own
        assert path.name in public or all(p.startswith("_") for p in relative.parts), relative
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 500, relative


def test_jobs_knows_nothing_of_extraction_stac_reports_or_the_cli():
    folder = SRC / "jobs"
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("eoextract.extract", "eoextract.stac", "eoextract.report",
                                            "eoextract.cli")), (path, name)


def test_the_extraction_manager_uses_the_public_finished_job_hook():
    from eoextract.extract import ExtractionManager
    from eoextract.jobs import JobManager

    assert ExtractionManager.process_finished_job is not JobManager.process_finished_job
    overridden = {name for name in vars(ExtractionManager) if name.startswith("_") and not name.startswith("__")
                  and hasattr(JobManager, name)}
    assert overridden == set(), overridden
