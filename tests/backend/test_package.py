"""The public surface of eoextract.backend: four names, imported lazily; every module is private."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

import pytest

import eoextract.backend as backend

PUBLIC = {"LocalBackend", "serve", "create_app", "BackendSettings", "BackendProfile"}


def test_public_names_are_pinned_and_resolve():
    assert set(backend.__all__) == PUBLIC
    assert sorted(dir(backend)) == sorted(PUBLIC)
    for name in PUBLIC:
        value = getattr(backend, name)
        assert value.__module__.startswith("eoextract.backend._"), name


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="'eoextract.backend' has no attribute 'engine'"):
        backend.engine  # noqa: B018


def test_every_module_but_the_package_is_private():
    folder = pathlib.Path(backend.__file__).parent
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert modules and all(m.startswith("_") for m in modules), modules
    for name in modules:
        module = importlib.import_module(f"eoextract.backend.{name}")
        assert not hasattr(module, "__all__"), name


def test_importing_the_package_loads_no_server_code():
    code = ("import sys, eoextract.backend; "
            "print(sorted(m for m in sys.modules if m.startswith(('eoextract.backend.', 'fastapi'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
