"""Where each downloaded asset goes: the user's ``output_path_generator``, made safe.

Two callback signatures are accepted, told apart by their parameter names:

* ``(root_folder, tmp_path, geometry_index, row) -> Path`` — the reference notebook's
  (the callback may open ``tmp_path`` to read the file, e.g. its CRS);
* ``(output_dir, idx, row, asset_id) -> Path`` — openeo-gfmap 0.4.7's and ESA
  WorldCereal's (``root_dir``/``root_folder``, ``idx``/``job_index``).

:class:`OutputPathGenerator` calls either one, checks the result is a path inside the
output folder and hands :func:`eoextract.jobs._download.download_job_assets` the
``choose_path(asset, tmp_path)`` callable it expects. :func:`check_signature` checks
user callbacks up front, before any job is submitted.
"""

from __future__ import annotations

import enum
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eoextract.errors import ConfigurationError, UnsafeAssetPath
from eoextract._util.hrefs import ensure_inside
from eoextract.jobs._download import RemoteAsset

logger = logging.getLogger(__name__)

#: Parameters of the reference notebook's ``output_path_generator``.
SEED_PARAMETERS = ("root_folder", "tmp_path", "geometry_index", "row")
#: Parameters of openeo-gfmap 0.4.7's ``output_path_generator``.
GFMAP_PARAMETERS = ("output_dir", "idx", "row", "asset_id")


class GeneratorStyle(enum.StrEnum):
    """Signature style of an ``output_path_generator``."""

    #: ``(root_folder, tmp_path, geometry_index, row)``
    SEED = "seed"
    #: ``(output_dir, idx, row, asset_id)``
    GFMAP = "gfmap"


def _describe(name: str, params: Sequence[str], keywords: Sequence[str] = ()) -> str:
    return f"{name}({', '.join([*params, *keywords])})"


def check_signature(
    fn: Any,
    expected_params: Sequence[str],
    *,
    name: str,
    keywords: Sequence[str] = (),
) -> inspect.Signature | None:
    """Check that a user callback can be called the way it will be.

    Args:
        fn: The callback.
        expected_params: Names of the positional arguments it will receive, in order.
        name: The callback's role, used in the message (e.g. ``"post_job_action"``).
        keywords: Keyword arguments it will also receive.

    Returns:
        Its signature, or None when Python cannot tell (some built-ins).

    Raises:
        ConfigurationError: If ``fn`` is not callable or cannot take these arguments;
            the message names the callback and the expected signature.
    """
    expected = _describe(name, expected_params, keywords)
    if not callable(fn):
        raise ConfigurationError(f"{name} must be a function like {expected}, got {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*expected_params, **{k: k for k in keywords})
    except TypeError as exc:
        label = getattr(fn, "__qualname__", None) or repr(fn)
        raise ConfigurationError(
            f"{name} {label}{signature} cannot be called as {expected}: {exc}"
        ) from None
    return signature


def detect_style(fn: Callable[..., Any]) -> GeneratorStyle:
    """Tell which signature an ``output_path_generator`` follows, from its parameter names.

    A parameter named like ``asset_id``, a third parameter ``row`` (or a second one
    ``idx``/``index``/``job_index``) means openeo-gfmap 0.4.7's (and WorldCereal's)
    style; a fourth parameter ``row``, or anything else, the reference notebook's
    ``(root_folder, tmp_path, geometry_index, row)``.

    Args:
        fn: The generator.

    Returns:
        Its style.
    """
    try:
        params = [
            p.name.lower()
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return GeneratorStyle.SEED
    if any(p in ("asset_id", "asset_name", "asset_key", "asset") for p in params):
        return GeneratorStyle.GFMAP
    if len(params) >= 4 and params[3] == "row":
        return GeneratorStyle.SEED
    if len(params) >= 3 and params[2] == "row":
        return GeneratorStyle.GFMAP
    if len(params) >= 2 and params[1] in ("idx", "index", "i", "job_index", "job_idx"):
        return GeneratorStyle.GFMAP
    return GeneratorStyle.SEED


def geometry_indices(assets: Iterable[RemoteAsset]) -> dict[str, int | None]:
    """The ``geometry_index`` passed to the generator for each asset of one job.

    Assets named ``openEO_<n>`` get ``n`` (numeric order: ``openEO_10`` follows
    ``openEO_9``). When no asset of the job has such a name, each gets its position
    in the results (as openeo-gfmap did); otherwise assets without one get None.

    Args:
        assets: The job's assets.

    Returns:
        Asset name → index.
    """
    assets = list(assets)
    if any(a.geometry_index is not None for a in assets):
        return {a.name: a.geometry_index for a in assets}
    return {a.name: i for i, a in enumerate(assets)}


class OutputPathGenerator:
    """A user's ``output_path_generator``, checked and confined to the output folder.

    Args:
        generator: The user's callback, in either signature style.
        root: The output folder; every path it returns must lie inside.
        style: Force a signature style instead of detecting it.

    Raises:
        ConfigurationError: If the callback cannot take four positional arguments.
    """

    def __init__(
        self,
        generator: Callable[..., Any],
        root: Path | str,
        *,
        style: GeneratorStyle | str | None = None,
    ) -> None:
        self.style = GeneratorStyle(style) if style is not None else detect_style(generator)
        params = SEED_PARAMETERS if self.style is GeneratorStyle.SEED else GFMAP_PARAMETERS
        try:
            check_signature(generator, params, name="output_path_generator")
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{exc}; an output_path_generator takes (root_folder, tmp_path, geometry_index, "
                f"row) or (root_dir, idx, row, asset_id) positionally") from None
        self.generator = generator
        self.root = Path(root)

    def __repr__(self) -> str:
        label = getattr(self.generator, "__qualname__", repr(self.generator))
        return f"OutputPathGenerator({label}, root={str(self.root)!r}, style={self.style.value!r})"

    def path_for(self, asset: RemoteAsset, tmp_path: Path, geometry_index: int | None, row: Any) -> Path:
        """Ask the generator for an asset's final path and check it.

        Args:
            asset: The asset being placed.
            tmp_path: Its verified temporary file (the generator may open it).
            geometry_index: The asset's index (see :func:`geometry_indices`).
            row: The job's row (a ``pandas.Series``).

        Returns:
            The final path, absolute and resolved, inside the output folder.

        Raises:
            ConfigurationError: If the generator returns something that is not a path.
            UnsafeAssetPath: If the path lies outside the output folder.
        """
        if self.style is GeneratorStyle.SEED:
            result = self.generator(self.root, tmp_path, geometry_index, row)
        else:
            result = self.generator(self.root, geometry_index, row, asset.name)
        if not isinstance(result, (str, os.PathLike)) or not os.fspath(result):
            raise ConfigurationError(
                f"output_path_generator returned {type(result).__name__} {result!r} for asset "
                f"{asset.name!r}; it must return a path inside {self.root}"
            )
        try:
            return ensure_inside(result, self.root)
        except UnsafeAssetPath as exc:
            exc.asset = asset.name
            raise

    def chooser(
        self, row: Any, assets: Iterable[RemoteAsset]
    ) -> Callable[[RemoteAsset, Path], Path]:
        """The ``choose_path(asset, tmp_path)`` for one job's assets.

        Args:
            row: The job's row.
            assets: All assets of the job (they determine the geometry indices).

        Returns:
            A callable for :func:`eoextract.jobs._download.download_job_assets`.
        """
        indices: Mapping[str, int | None] = geometry_indices(assets)

        def choose_path(asset: RemoteAsset, tmp_path: Path) -> Path:
            return self.path_for(asset, tmp_path, indices.get(asset.name, asset.geometry_index), row)

        return choose_path
