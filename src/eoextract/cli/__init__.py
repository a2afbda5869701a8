"""The ``eoextract`` command line: thin commands over library calls.

``eoextract status|jobs|history|retry|cancel|logs|report DB ...``, ``eoextract stac
build|validate``, ``eoextract backend serve``. Run ``eoextract --help`` for the list and
``docs/cli.md`` for the reference.
"""

from __future__ import annotations

from eoextract.cli import _backend  # noqa: F401  (registers commands)
from eoextract.cli import _dataset  # noqa: F401
from eoextract.cli import _jobs  # noqa: F401
from eoextract.cli import _report  # noqa: F401
from eoextract.cli import _stac  # noqa: F401
from eoextract.cli._common import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, app

__all__ = ["app", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE"]
