"""Asset definitions: named templates for the assets an extraction writes.

An :class:`AssetDefinition` holds the fields every asset of one kind shares (title,
description, media type, roles, extension fields such as ``eo:bands``). It makes
assets for items (:meth:`AssetDefinition.create_asset`) and describes them in a
collection's ``item_assets`` (:meth:`AssetDefinition.to_item_asset`), e.g. in a
post-job action::

    from eoextract.extract import AUXILIARY

    item.add_asset("auxiliary", AUXILIARY.create_asset(href=str(label_path)))

File-specific fields (``proj:*``, ``raster:bands`` data types, ``file:*``) are not part
of the definitions: the extraction manager reads them from the files themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pystac

_EO_SCHEMA = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"


@dataclass(frozen=True)
class AssetDefinition:
    """The shared fields of one kind of asset."""

    #: Title shown by STAC clients.
    title: str | None = None
    #: Longer description (CommonMark).
    description: str | None = None
    #: Media type of the files.
    media_type: str | None = None
    #: STAC roles, e.g. ``("data",)``.
    roles: tuple[str, ...] = ("data",)
    #: Other fields copied onto every asset (e.g. ``eo:bands``, ``gsd``).
    extra_fields: Mapping[str, Any] = field(default_factory=dict)
    #: Extension schema URLs the extra fields need.
    stac_extensions: tuple[str, ...] = ()

    def create_asset(self, href: str, **overrides: Any) -> pystac.Asset:
        """A new asset with this definition's fields.

        When the asset is added to an item, the extensions its fields need are
        declared on the item as well.

        Args:
            href: Where the file is (a local path or URL).
            **overrides: Fields replacing the definition's, by STAC name
                (``title``, ``description``, ``type``, ``roles`` or any extra field).

        Returns:
            The asset (not yet attached to an item).
        """
        fields: dict[str, Any] = {
            "title": self.title,
            "description": self.description,
            "type": self.media_type,
            "roles": list(self.roles),
            **copy.deepcopy(dict(self.extra_fields)),
            **overrides,
        }
        asset = _DefinedAsset(
            href=str(href),
            title=fields.pop("title"),
            description=fields.pop("description"),
            media_type=fields.pop("type"),
            roles=list(fields.pop("roles") or []) or None,
            extra_fields=fields,
        )
        asset._stac_extensions = self.stac_extensions
        return asset

    def to_item_asset(self) -> pystac.ItemAssetDefinition:
        """This definition as an entry of a collection's ``item_assets``."""
        return pystac.ItemAssetDefinition.create(
            title=self.title,
            description=self.description,
            media_type=self.media_type,
            roles=list(self.roles),
            extra_fields=copy.deepcopy(dict(self.extra_fields)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields of the definition as they appear in ``item_assets``."""
        return self.to_item_asset().to_dict()


class _DefinedAsset(pystac.Asset):
    """An asset that declares its extensions on the item it is added to."""

    _stac_extensions: tuple[str, ...] = ()

    def set_owner(self, obj: pystac.Item | pystac.Collection) -> None:
        super().set_owner(obj)
        for uri in self._stac_extensions:
            if uri not in obj.stac_extensions:
                obj.stac_extensions.append(uri)


def _band_table(text: str) -> tuple[tuple[str, str | None, float | None, float | None, int], ...]:
    """Rows of a whitespace-separated band table; ``-`` stands for an unknown value."""
    rows = []
    for line in text.strip().splitlines():
        name, common, center, fwhm, gsd = line.split()
        rows.append((name, None if common == "-" else common, None if center == "-" else float(center),
                     None if fwhm == "-" else float(fwhm), int(gsd)))
    return tuple(rows)


#: Sentinel-2 L2A bands: name, common name, centre wavelength and width (µm), gsd (m).
SENTINEL2_L2A_BANDS = _band_table("""
    B01  coastal  0.443  0.027  60
    B02  blue     0.490  0.098  10
    B03  green    0.560  0.045  10
    B04  red      0.665  0.038  10
    B05  rededge  0.704  0.019  20
    B06  rededge  0.740  0.018  20
    B07  rededge  0.783  0.028  20
    B08  nir      0.842  0.145  10
    B8A  nir08    0.865  0.033  20
    B09  nir09    0.945  0.026  60
    B11  swir16   1.610  0.143  20
    B12  swir22   2.190  0.242  20
    SCL  -        -      -      20
""")


def sentinel2_l2a_definition(
    *,
    band_prefix: str = "",
    bands: Sequence[str] | None = None,
    media_type: str = "application/x-netcdf",
    title: str = "Sentinel-2 L2A",
) -> AssetDefinition:
    """The definition of a Sentinel-2 L2A extraction asset (one file, many bands).

    Args:
        band_prefix: Prefix of the band names in the files, e.g. ``"S2-L2A-"`` for
            ``S2-L2A-B02``.
        bands: Band names (without prefix) to describe, in file order; default all 13.
        media_type: Media type of the files.
        title: Asset title.

    Returns:
        A definition with ``eo:bands`` (names, common names, wavelengths) and ``gsd``.
    """
    known = {b[0]: b for b in SENTINEL2_L2A_BANDS}
    selected = list(bands) if bands is not None else list(known)
    eo_bands = []
    for name in selected:
        if name not in known:
            raise ValueError(f"Unknown Sentinel-2 L2A band {name!r}; known: {', '.join(known)}")
        _, common, center, fwhm, _ = known[name]
        band: dict[str, Any] = {"name": band_prefix + name}
        if common:
            band["common_name"] = common
        if center is not None:
            band["center_wavelength"] = center
            band["full_width_half_max"] = fwhm
        if name == "SCL":
            band["description"] = "Scene classification"
        eo_bands.append(band)
    return AssetDefinition(
        title=title,
        description="Sentinel-2 L2A surface reflectance bands and scene classification, "
        "one time series per sample.",
        media_type=media_type,
        roles=("data",),
        extra_fields={"gsd": min(known[n][4] for n in selected) if selected else 10, "eo:bands": eo_bands},
        stac_extensions=(_EO_SCHEMA,),
    )


#: Sentinel-2 L2A extraction in NetCDF with band names as in openEO collections.
SENTINEL2_L2A = sentinel2_l2a_definition()

#: Auxiliary data written next to an extraction, e.g. rasterised ground-truth labels.
AUXILIARY = AssetDefinition(
    title="Auxiliary data",
    description="Auxiliary data for the sample, e.g. rasterised ground-truth labels.",
    media_type="application/x-netcdf",
    roles=("data", "auxiliary"),
)

#: The definitions above by asset key, for a collection's ``item_assets``.
ITEM_ASSETS: dict[str, AssetDefinition] = {
    "sentinel2_l2a": SENTINEL2_L2A,
    "auxiliary": AUXILIARY,
}
