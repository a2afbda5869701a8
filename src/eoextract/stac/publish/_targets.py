"""The places a catalogue is published to, and the one dispatcher that picks among them.

Each :class:`PublishTarget` names a kind of place (``s3``, ``stac-api``, ``pgstac``,
``geoparquet``), the URL schemes that mean it and the function that publishes there.
:func:`publish` picks the target from the URL's scheme, or from ``kind`` where the
caller already knows it (the command line's ``--to``, ``--stac-api``, ``--pgstac`` and
``export-geoparquet``), and passes every other option through to the function.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eoextract.errors import ConfigurationError
from eoextract.stac.publish._geoparquet import export_geoparquet
from eoextract.stac.publish._pgstac import load_into_pgstac
from eoextract.stac.publish._publish_result import PublishResult
from eoextract.stac.publish._s3 import publish_to_s3
from eoextract.stac.publish._stac_api import publish_to_stac_api


@dataclass(frozen=True)
class PublishTarget:
    """One kind of place a catalogue is published to.

    Attributes:
        kind: Its name: ``"s3"``, ``"stac-api"``, ``"pgstac"`` or ``"geoparquet"``.
        schemes: URL schemes that name it (``postgresql+psycopg`` counts as
            ``postgresql``); none for targets chosen by ``kind`` only.
        function: ``function(catalog_dir, target, **options) -> PublishResult``.
    """

    kind: str
    schemes: tuple[str, ...]
    function: Callable[..., PublishResult]

    def matches(self, url: str) -> bool:
        """Whether ``url``'s scheme names this target."""
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        return scheme.split("+", 1)[0] in self.schemes


#: Every target, by kind.
TARGETS: dict[str, PublishTarget] = {
    t.kind: t for t in (
        PublishTarget("s3", ("s3",), publish_to_s3),
        PublishTarget("stac-api", ("http", "https"), publish_to_stac_api),
        PublishTarget("pgstac", ("postgresql", "postgres"), load_into_pgstac),
        PublishTarget("geoparquet", (), export_geoparquet),
    )
}


def target_for(target: str, kind: str | None = None) -> PublishTarget:
    """The target a URL names, or the one of ``kind``.

    Raises:
        ConfigurationError: For an unknown kind, or a URL no target takes.
    """
    if kind is not None:
        try:
            return TARGETS[kind]
        except KeyError:
            raise ConfigurationError(f"unknown publish target kind {kind!r}: use one of "
                                     f"{', '.join(TARGETS)}") from None
    for candidate in TARGETS.values():
        if candidate.matches(target):
            return candidate
    raise ConfigurationError(
        "publish target must be s3://bucket/prefix, a STAC API URL (http(s)://) or a "
        "pgstac database URL (postgresql://)"
    )


def publish(
    catalog_dir: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    kind: str | None = None,
    **options: Any,
) -> PublishResult:
    """Publish a catalogue to the target its URL names (or to the target of ``kind``).

    ``s3://bucket/prefix`` → :func:`publish_to_s3`; ``http(s)://…`` (a STAC API) →
    :func:`publish_to_stac_api`; ``postgresql://…`` → :func:`load_into_pgstac`;
    ``kind="geoparquet"`` with a file path → :func:`export_geoparquet`.

    Args:
        catalog_dir: The catalogue (root document, its folder or the output folder).
        target: Where to.
        kind: The kind of target (see :data:`TARGETS`), when not told by the URL.
        **options: Passed on to the function chosen.

    Returns:
        What was done; ``published_items`` and ``failed_items`` name the items.

    Raises:
        ConfigurationError: When no target takes ``target``.
    """
    chosen = target_for(os.fspath(target), kind)
    return chosen.function(catalog_dir, target, **options)
