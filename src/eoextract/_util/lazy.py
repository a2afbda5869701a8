"""Names of a package imported on first use: the ``__getattr__``/``__dir__`` pair of a
package ``__init__`` that re-exports names of its modules lazily."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: MutableMapping[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names live in other modules.

    Args:
        package: The package's name, for error messages.
        exports: Public name -> module it is imported from.
        namespace: The package's ``globals()``; a name is kept there once imported.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace.get("__all__", ())) | set(exports))

    return __getattr__, __dir__


class _LazyModule:
    """Stands for a module until one of its attributes is first used; then imports it and
    puts the module itself in its place (so later uses cost nothing)."""

    def __init__(self, name: str, namespace: MutableMapping[str, Any], alias: str) -> None:
        self._name, self._namespace, self._alias = name, namespace, alias

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        self._namespace[self._alias] = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r} (not imported yet)>"


def lazy_module(name: str, namespace: MutableMapping[str, Any], alias: str) -> Any:
    """A stand-in for ``import name as alias`` in a module's ``namespace`` (its ``globals()``)
    that imports ``name`` only when first used: keeps heavy libraries (pandas, numpy) out of
    commands that never touch them."""
    return _LazyModule(name, namespace, alias)
