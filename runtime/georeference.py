"""Georeferencing in an stcm header: the coordinate system, the affine transform and the
nodata value, validated and encoded compactly (``docs/format.md``). No NumPy, no torch."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from stcm.runtime.fields import (F64, MAX_JSON_BYTES, ByteReader, field_error, is_number,
                                 write_varint)

_EPSG = re.compile(r"EPSG:([1-9][0-9]{0,8})")
_CRS_NONE, _CRS_EPSG, _CRS_TEXT = 0, 1, 2
_TRANSFORM_NONE, _TRANSFORM_NORTH_UP, _TRANSFORM_FULL = 0, 1, 2


@dataclass(frozen=True)
class Georeference:
    """Where an image lies on Earth, and which value marks missing pixels.

    Attributes:
        crs: Coordinate reference system as ``"EPSG:<code>"`` when it is exactly an EPSG
            code (stored in 1-5 bytes), else as WKT; or None.
        transform: The 6 affine coefficients (a, b, c, d, e, f) of rasterio's ``Affine[:6]``,
            mapping (col, row) to (x, y): x = a*col + b*row + c, y = d*col + e*row + f; or None.
        nodata: The value of missing pixels (NaN and +-inf allowed), or None.

    Raises:
        CorruptError: A field has the wrong type, or the transform is not 6 finite numbers.

    >>> Georeference("EPSG:32633", (10, 0, 500000, 0, -10, 5000000), float("nan")).transform[0]
    10.0
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None

    def __post_init__(self):
        if self.crs is not None:
            if not isinstance(self.crs, str) or not self.crs:
                raise field_error("georef.crs", f"must be a non-empty string or None, "
                                  f"got {self.crs!r:.60}")
            try:
                encoded = self.crs.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise field_error("georef.crs", f"is not encodable as UTF-8: {exc}") from exc
            if len(encoded) > MAX_JSON_BYTES:
                raise field_error("georef.crs", f"is {len(encoded)} bytes, more than "
                                  f"{MAX_JSON_BYTES}")
        if self.transform is not None:
            t = self.transform
            if (not isinstance(t, (tuple, list)) or len(t) != 6
                    or not all(is_number(v) for v in t)):
                raise field_error("georef.transform", f"must be 6 numbers or None, got {t!r:.80}")
            values = tuple(float(v) for v in t)
            if not all(math.isfinite(v) for v in values):
                raise field_error("georef.transform", f"must be finite, got {values}")
            object.__setattr__(self, "transform", values)
        if self.nodata is not None:
            if not is_number(self.nodata):
                raise field_error("georef.nodata", f"must be a number or None, got "
                                  f"{self.nodata!r:.60}")
            object.__setattr__(self, "nodata", float(self.nodata))

    def _key(self):
        # NaN nodata must compare equal to itself, or no georeferenced header would round-trip.
        nan = self.nodata is not None and math.isnan(self.nodata)
        return self.crs, self.transform, "nan" if nan else self.nodata

    def __eq__(self, other):
        if not isinstance(other, Georeference):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def to_bytes(self) -> bytes:
        out = bytearray()
        epsg = _EPSG.fullmatch(self.crs) if self.crs is not None else None
        if self.crs is None:
            out.append(_CRS_NONE)
        elif epsg:
            out += bytes([_CRS_EPSG]) + write_varint(int(epsg.group(1)))
        else:
            text = self.crs.encode("utf-8")
            out += bytes([_CRS_TEXT]) + write_varint(len(text)) + text
        t = self.transform
        if t is None:
            out.append(_TRANSFORM_NONE)
        elif t[1] == 0.0 and t[3] == 0.0:  # north-up: b = d = 0 (also -0.0, which == 0.0)
            out.append(_TRANSFORM_NORTH_UP)
            out += b"".join(F64.pack(t[i]) for i in (0, 2, 4, 5))
        else:
            out.append(_TRANSFORM_FULL)
            out += b"".join(F64.pack(v) for v in t)
        if self.nodata is None:
            out.append(0)
        else:
            out += b"\x01" + F64.pack(self.nodata)
        return bytes(out)

    @classmethod
    def from_reader(cls, reader: ByteReader) -> Georeference:
        kind = reader.u8("georef.crs kind")
        if kind == _CRS_NONE:
            crs = None
        elif kind == _CRS_EPSG:
            crs = f"EPSG:{reader.varint('georef.crs EPSG code', 999_999_999)}"
            if crs == "EPSG:0":
                raise field_error("georef.crs", "EPSG code 0 does not exist")
        elif kind == _CRS_TEXT:
            raw = reader.text("georef.crs", MAX_JSON_BYTES)
            try:
                crs = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise field_error("georef.crs", f"is not UTF-8 ({exc})") from exc
            if _EPSG.fullmatch(crs):
                raise field_error("georef.crs", "an EPSG code stored as text (not canonical)")
        else:
            raise field_error("georef.crs", f"unknown kind {kind} (0 none, 1 EPSG, 2 text)")
        kind = reader.u8("georef.transform kind")
        if kind == _TRANSFORM_NONE:
            transform = None
        elif kind == _TRANSFORM_NORTH_UP:
            a, c, e, f = (reader.f64("georef.transform") for _ in range(4))
            transform = (a, 0.0, c, 0.0, e, f)
        elif kind == _TRANSFORM_FULL:
            transform = tuple(reader.f64("georef.transform") for _ in range(6))
            if transform[1] == 0.0 and transform[3] == 0.0:
                raise field_error("georef.transform", "a north-up transform stored in full "
                                  "(not canonical)")
        else:
            raise field_error("georef.transform", f"unknown kind {kind} (0 none, 1 north-up, "
                              "2 full)")
        kind = reader.u8("georef.nodata kind")
        if kind not in (0, 1):
            raise field_error("georef.nodata", f"unknown kind {kind} (0 none, 1 float64)")
        nodata = reader.f64("georef.nodata") if kind else None
        return cls(crs=crs, transform=transform, nodata=nodata)

