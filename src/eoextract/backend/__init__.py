"""The embedded openEO backend: an openEO API 1.2 server on 127.0.0.1 for tests and trials.

``LocalBackend`` runs it in a background thread, ``serve`` in the foreground
(``eoextract backend serve``), ``create_app`` builds the ASGI app. Names are imported
lazily so ``import eoextract.backend`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eoextract._util.lazy import lazy_exports

_EXPORTS = {
    "LocalBackend": "eoextract.backend._local",
    "serve": "eoextract.backend._local",
    "create_app": "eoextract.backend._app",
    "BackendSettings": "eoextract.backend._service",
    "BackendProfile": "eoextract.backend._profile",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.backend._app import create_app
    from eoextract.backend._local import LocalBackend, serve
    from eoextract.backend._profile import BackendProfile
    from eoextract.backend._service import BackendSettings
