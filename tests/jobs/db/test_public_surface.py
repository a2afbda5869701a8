"""The public surface of eoextract.jobs.db: the package's names; every module in it is private."""

from __future__ import annotations

import importlib
import pkgutil

import eoextract.jobs.db as jobs_db


def test_public_names_are_pinned_and_resolve():
    assert set(jobs_db.__all__) == {
        "JobDatabase", "JobRecord", "StatusChange", "Transition", "ADOPTABLE", "MANAGED_COLUMNS",
        "UPDATABLE_FIELDS", "SqlJobDatabase", "FileJobDatabase", "get_job_db", "create_job_db",
    }
    for name in jobs_db.__all__:
        assert getattr(jobs_db, name) is not None, name


def test_every_module_is_private_and_carries_no_all():
    modules = [m.name for m in pkgutil.iter_modules(jobs_db.__path__)]
    assert modules
    for name in modules:
        assert name.startswith("_"), name
        module = importlib.import_module(f"{jobs_db.__name__}.{name}")
        assert not hasattr(module, "__all__"), name


def test_both_databases_implement_the_interface():
    for cls in (jobs_db.SqlJobDatabase, jobs_db.FileJobDatabase):
        assert issubclass(cls, jobs_db.JobDatabase)
        assert not cls.__abstractmethods__, cls
