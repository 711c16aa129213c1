"""The raster metadata an stcm header keeps besides the pixels and georeferencing: tags,
colour interpretation, units, radiometric scale/offset, overview factors (``docs/format.md``,
extra). Application fields: the decoder of pixels needs none of them, the file writer all.
Validated on construction, so a header read from a file holds only well-formed values.
No NumPy, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stcm.runtime.fields import field_error, is_int, is_number

#: Keys of a header's extra that stcm itself writes, and so validates on reading.
EXTRA_DESCRIPTIONS, EXTRA_METADATA, EXTRA_GEOREF = "band_descriptions", "metadata", "georef"
MAX_TAG_TEXT = 1 << 16  # one tag's key or value; the whole extra is bounded by MAX_JSON_BYTES
MAX_OVERVIEWS = 32
MAX_OVERVIEW_FACTOR = 1 << 16


def _tags(name: str, tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= MAX_TAG_TEXT
            and len(v) <= MAX_TAG_TEXT for k, v in tags.items()):
        raise field_error(name, f"must map non-empty strings to strings, got {tags!r:.80}")
    return dict(tags)


def _per_band(name: str, values: Any, bands: int | None, check) -> tuple | None:
    if values is None:
        return None
    if not isinstance(values, (list, tuple)) or (bands is not None and len(values) != bands):
        raise field_error(name, f"must list one value per band ({bands}), got {values!r:.80}")
    return tuple(check(v) for v in values)


def _string(name: str):
    def check(v):
        if not isinstance(v, str) or len(v) > MAX_TAG_TEXT:
            raise field_error(name, f"must hold strings, got {v!r:.60}")
        return v
    return check


def _real(name: str):
    def check(v):
        if not is_number(v) or not math.isfinite(float(v)):
            raise field_error(name, f"must hold finite numbers, got {v!r:.60}")
        return float(v)
    return check


@dataclass(frozen=True)
class RasterMetadata:
    """What a raster file says about its bands beyond the pixels (rasterio's names).

    Attributes:
        tags: The dataset's tags of the default domain (``ds.tags()``), AREA_OR_POINT
            included: Point vs Area moves every coordinate by half a pixel.
        band_tags: Per band its default-domain tags (``ds.tags(b)``), or None when none has any.
        colorinterp: Per band the name of its ``ColorInterp`` (``"red"``, ``"nir"``, ...).
        units: Per band its unit (``ds.units``), or None when none has one.
        scales: Per band the radiometric scale (value = pixel * scale + offset), or None when
            all are 1.
        offsets: Per band the radiometric offset, or None when all are 0.
        overviews: The overview decimation factors of the source (``ds.overviews(1)``),
            rebuilt when a GeoTIFF is written.
        dataset_mask: The source had a per-dataset mask band (``MaskFlags.per_dataset``):
            the container's mask (shared by all bands) is written back as one.

    Raises:
        CorruptError: A field has the wrong type or length; names the field.
    """

    tags: dict = field(default_factory=dict)
    band_tags: tuple[dict, ...] | None = None
    colorinterp: tuple[str, ...] | None = None
    units: tuple[str, ...] | None = None
    scales: tuple[float, ...] | None = None
    offsets: tuple[float, ...] | None = None
    overviews: tuple[int, ...] = ()
    dataset_mask: bool = False
    bands: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("tags", _tags("metadata.tags", self.tags))
        set_("band_tags", _per_band("metadata.band_tags", self.band_tags, self.bands,
                                    lambda t: _tags("metadata.band_tags", t)))
        set_("colorinterp", _per_band("metadata.colorinterp", self.colorinterp, self.bands,
                                      _string("metadata.colorinterp")))
        set_("units", _per_band("metadata.units", self.units, self.bands,
                                _string("metadata.units")))
        set_("scales", _per_band("metadata.scales", self.scales, self.bands,
                                 _real("metadata.scales")))
        set_("offsets", _per_band("metadata.offsets", self.offsets, self.bands,
                                  _real("metadata.offsets")))
        factors = self.overviews
        if (not isinstance(factors, (list, tuple)) or len(factors) > MAX_OVERVIEWS
                or not all(is_int(f) and 2 <= f <= MAX_OVERVIEW_FACTOR for f in factors)
                or any(a >= b for a, b in zip(factors, factors[1:]))):
            raise field_error("metadata.overviews", f"must be at most {MAX_OVERVIEWS} "
                              f"increasing factors in 2..{MAX_OVERVIEW_FACTOR}, got "
                              f"{factors!r:.60}")
        set_("overviews", tuple(factors))
        if not isinstance(self.dataset_mask, bool):
            raise field_error("metadata.dataset_mask", f"must be true or false, got "
                              f"{self.dataset_mask!r:.30}")

    def to_json(self) -> dict:
        """The fields that say something (others are omitted), as a JSON object."""
        out: dict = {}
        for name in ("tags", "band_tags", "colorinterp", "units", "scales", "offsets",
                     "overviews", "dataset_mask"):
            value = getattr(self, name)
            if value:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, value: Any, bands: int) -> RasterMetadata:
        """Inverts ``to_json`` for an image of ``bands`` bands.

        Raises:
            CorruptError: ``value`` is not such an object, or says nothing (not canonical).
        """
        if not isinstance(value, dict) or not value:
            raise field_error("extra.metadata", f"must be a non-empty object, got "
                              f"{value!r:.60}")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__) - {"bands"})
        if unknown or "bands" in value:
            raise field_error("extra.metadata", f"unknown keys {unknown or ['bands']!r:.80}")
        metadata = cls(**value, bands=bands)
        if metadata.to_json() != value:
            raise field_error("extra.metadata", "holds default values (not canonical)")
        return metadata


def check_descriptions(value: Any, bands: int) -> tuple[str | None, ...]:
    """Band descriptions as extra stores them: one string or null per band."""
    names = _per_band("extra.band_descriptions", value, bands,
                      lambda v: v if v is None else _string("extra.band_descriptions")(v))
    if names is None or not any(names):
        raise field_error("extra.band_descriptions", f"must name at least one band, got "
                          f"{value!r:.60}")
    return names


def check_extra(extra: dict, bands: int) -> None:
    """Validates the keys of a header's extra that stcm writes (others pass unchecked)."""
    if EXTRA_DESCRIPTIONS in extra:
        check_descriptions(extra[EXTRA_DESCRIPTIONS], bands)
    if EXTRA_METADATA in extra:
        RasterMetadata.from_json(extra[EXTRA_METADATA], bands)
