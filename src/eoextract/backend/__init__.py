"""The embedded openEO backend: an openEO API 1.2 server on 127.0.0.1 for tests and trials.

``LocalBackend`` runs it in a background thread, ``serve`` in the foreground
(``eoextract backend serve``), ``create_app`` builds the ASGI app. Names are imported
lazily so ``import eoextract.backend`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LocalBackend": "eoextract.backend._local",
    "serve": "eoextract.backend._local",
    "create_app": "eoextract.backend._app",
    "BackendSettings": "eoextract.backend._service",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eoextract.backend' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.backend._app import create_app
    from eoextract.backend._local import LocalBackend, serve
    from eoextract.backend._service import BackendSettings
