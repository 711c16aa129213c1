"""Georeferencing in an stcm header: the coordinate system, the affine transform, the nodata
value, and ground control points and RPCs for images without a transform, validated and
encoded compactly (``docs/format.md``). No NumPy, no torch."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from stcm.runtime.fields import (F64, MAX_JSON_BYTES, ByteReader, canonical_json, field_error,
                                 is_number, write_varint)

_EPSG = re.compile(r"EPSG:([1-9][0-9]{0,8})")
_CRS_NONE, _CRS_EPSG, _CRS_TEXT = 0, 1, 2
_TRANSFORM_NONE, _TRANSFORM_NORTH_UP, _TRANSFORM_FULL = 0, 1, 2
#: A text field of a control point (its id or note): GeoTIFF's GCPs have no size limit, but
#: one this long is surely not a name.
MAX_GCP_TEXT = 1024
MAX_GCPS = 10_000
#: rasterio's ``RPC`` fields (``RPC.to_dict()``): 20 coefficients per polynomial, the other
#: fields single numbers (the two error estimates may be absent).
RPC_COEFFICIENTS = ("line_num_coeff", "line_den_coeff", "samp_num_coeff", "samp_den_coeff")
RPC_NUMBERS = ("height_off", "height_scale", "lat_off", "lat_scale", "line_off", "line_scale",
               "long_off", "long_scale", "samp_off", "samp_scale")
RPC_OPTIONAL = ("err_bias", "err_rand")


def _finite(name: str, v: Any) -> float:
    if not is_number(v) or not math.isfinite(float(v)):
        raise field_error(name, f"must be a finite number, got {v!r:.60}")
    return float(v)


def _text(name: str, v: Any, limit: int) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise field_error(name, f"must be a string of at most {limit} characters, got "
                          f"{v!r:.60}")
    return v


def _crs(name: str, crs: Any) -> str | None:
    if crs is None:
        return None
    if not isinstance(crs, str) or not crs:
        raise field_error(name, f"must be a non-empty string or None, got {crs!r:.60}")
    try:
        encoded = crs.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise field_error(name, f"is not encodable as UTF-8: {exc}") from exc
    if len(encoded) > MAX_JSON_BYTES:
        raise field_error(name, f"is {len(encoded)} bytes, more than {MAX_JSON_BYTES}")
    return crs


@dataclass(frozen=True)
class ControlPoint:
    """A ground control point: pixel (row, col) lies at (x, y, z) of the GCPs' CRS (the
    fields of rasterio's ``GroundControlPoint``).

    Raises:
        CorruptError: A coordinate is not a finite number, or id/info not a short string.
    """

    row: float
    col: float
    x: float
    y: float
    z: float = 0.0
    id: str = ""
    info: str = ""

    def __post_init__(self):
        for name in ("row", "col", "x", "y", "z"):
            object.__setattr__(self, name, _finite(f"georef.gcps.{name}", getattr(self, name)))
        for name in ("id", "info"):
            _text(f"georef.gcps.{name}", getattr(self, name), MAX_GCP_TEXT)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_rpcs(rpcs: Any) -> dict | None:
    """Rational polynomial coefficients as ``{name: float or 20 floats}`` (rasterio's
    ``RPC.to_dict()``, absent error estimates dropped), or None; CorruptError otherwise."""
    if rpcs is None:
        return None
    if not isinstance(rpcs, dict):
        raise field_error("georef.rpcs", f"must be an object, got {type(rpcs).__name__}")
    rpcs = {k: v for k, v in rpcs.items() if not (k in RPC_OPTIONAL and v is None)}
    known = set(RPC_COEFFICIENTS + RPC_NUMBERS + RPC_OPTIONAL)
    missing = sorted(set(RPC_COEFFICIENTS + RPC_NUMBERS) - set(rpcs))
    unknown = sorted(str(k) for k in set(rpcs) - known)
    if missing or unknown:
        raise field_error("georef.rpcs", f"missing {missing}, unknown {unknown:.80}")
    out = {}
    for key, value in rpcs.items():
        if key in RPC_COEFFICIENTS:
            if not isinstance(value, (list, tuple)) or len(value) != 20:
                raise field_error("georef.rpcs", f"{key} must be 20 numbers, got {value!r:.60}")
            out[key] = [_finite(f"georef.rpcs.{key}", v) for v in value]
        else:
            out[key] = _finite(f"georef.rpcs.{key}", value)
    return out


@dataclass(frozen=True)
class Georeference:
    """Where an image lies on Earth, and which value marks missing pixels.

    An image is georeferenced by an affine transform, or (satellite products before
    orthorectification) only by ground control points or RPCs; GDAL allows all three at once.

    Attributes:
        crs: Coordinate reference system as ``"EPSG:<code>"`` when it is exactly an EPSG
            code (stored in 1-5 bytes), else as WKT; or None.
        transform: The 6 affine coefficients (a, b, c, d, e, f) of rasterio's ``Affine[:6]``,
            mapping (col, row) to (x, y): x = a*col + b*row + c, y = d*col + e*row + f; or None.
        nodata: The value of missing pixels (NaN and +-inf allowed), or None.
        gcps: Ground control points (``ControlPoint``), at most 10 000.
        gcp_crs: The CRS of the GCPs' (x, y), as ``crs``; only with GCPs.
        rpcs: Rational polynomial coefficients (``check_rpcs``), or None.

    Raises:
        CorruptError: A field has the wrong type, or the transform is not 6 finite numbers.

    >>> Georeference("EPSG:32633", (10, 0, 500000, 0, -10, 5000000), float("nan")).transform[0]
    10.0
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None
    gcps: tuple[ControlPoint, ...] = ()
    gcp_crs: str | None = None
    rpcs: dict | None = None

    def __post_init__(self):
        _crs("georef.crs", self.crs)
        gcps = self.gcps
        if (not isinstance(gcps, (tuple, list)) or len(gcps) > MAX_GCPS
                or not all(isinstance(p, ControlPoint) for p in gcps)):
            raise field_error("georef.gcps", f"must be at most {MAX_GCPS} ControlPoints, got "
                              f"{gcps!r:.80}")
        object.__setattr__(self, "gcps", tuple(gcps))
        if _crs("georef.gcp_crs", self.gcp_crs) is not None and not gcps:
            raise field_error("georef.gcp_crs", "is only meaningful with GCPs")
        object.__setattr__(self, "rpcs", check_rpcs(self.rpcs))
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
        rpcs = canonical_json(self.rpcs) if self.rpcs is not None else None
        return (self.crs, self.transform, "nan" if nan else self.nodata, self.gcps,
                self.gcp_crs, rpcs)

    def __eq__(self, other):
        if not isinstance(other, Georeference):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    # GCPs and RPCs came with format 2.3; they travel as JSON in the header's extra (its
    # "georef" key), so the binary record of crs, transform and nodata is unchanged.
    def supplement(self) -> dict:
        """The GCPs and RPCs as the JSON object stored in the header's extra (empty without)."""
        out: dict = {}
        if self.gcps:
            out["gcps"] = [p.to_json() for p in self.gcps]
        if self.gcp_crs is not None:
            out["gcp_crs"] = self.gcp_crs
        if self.rpcs is not None:
            out["rpcs"] = self.rpcs
        return out

    def with_supplement(self, supplement: Any) -> Georeference:
        """This georef with the GCPs and RPCs of ``supplement`` (as ``supplement()`` gives).

        Raises:
            CorruptError: ``supplement`` is not such an object, or is empty (not canonical).
        """
        if not isinstance(supplement, dict) or not supplement:
            raise field_error("extra.georef", f"must be a non-empty object, got "
                              f"{supplement!r:.60}")
        unknown = sorted(set(supplement) - {"gcps", "gcp_crs", "rpcs"})
        if unknown:
            raise field_error("extra.georef", f"unknown keys {unknown!r:.80}")
        points = supplement.get("gcps", [])
        if not isinstance(points, list) or (not points and "gcps" in supplement):
            raise field_error("extra.georef", f"gcps must be a non-empty list, got "
                              f"{points!r:.60}")
        gcps = []
        for p in points[:MAX_GCPS + 1]:
            if not isinstance(p, dict) or set(p) != {f.name for f in fields(ControlPoint)}:
                raise field_error("georef.gcps", f"each must be an object of row, col, x, y, "
                                  f"z, id, info; got {p!r:.80}")
            gcps.append(ControlPoint(**p))
        return Georeference(self.crs, self.transform, self.nodata, tuple(gcps),
                            supplement.get("gcp_crs"), supplement.get("rpcs"))

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

