"""The stcm container: the versioned binary file that holds one compressed image.

A container is a small fixed header, a canonical-JSON metadata block (image shape, dtype,
per-band normalisation, quality, latent geometry, georeferencing, the model config), a table
of streams and the streams themselves: per band group one stream for the hyper latent z and
one per latent tile of y. Header and table carry CRC32s, and so does every stream, so one tile
can be located and checked without touching the others. ``docs/format.md`` gives the layout
byte by byte.

Reading trusts nothing: every length is compared with the bytes actually present and every
field is type- and range-checked before anything proportional to a claimed size is
allocated, and each failure is a ``ContainerError`` subclass that says what is wrong.
This module must not import torch: it is the one part of the runtime that tools which only
inspect files (``stcm info``) need.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

from stcm.errors import (CorruptError, ModelMismatchError, NotStcmFileError, TruncatedError,
                         UnsupportedVersionError)

__all__ = [
    "MAGIC", "FORMAT_MAJOR", "FORMAT_MINOR", "MAX_METADATA_BYTES", "DEFAULT_MAX_PIXELS",
    "KIND_Z", "KIND_Y", "DTYPES", "Georeference", "Header", "StreamEntry", "Container",
    "tile_grid", "num_tiles", "write_container", "read_container", "peek_header",
    "check_model", "check_reference",
]

MAGIC = b"STCM"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
MAX_METADATA_BYTES = 1 << 20
DEFAULT_MAX_PIXELS = 2 ** 34  # height * width * bands; a reader's resource limit
KIND_Z, KIND_Y = 0, 1
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")

# Mirrors stcm.models.transforms (which imports torch): g_a halves the image 4 times, h_a twice
# more, so the image is padded to a multiple of 64 and the latents are 1/16 and 1/64 of it.
DOWNSAMPLE = 16
HYPER_DOWNSAMPLE = 4
PAD_MULTIPLE = DOWNSAMPLE * HYPER_DOWNSAMPLE
BAND_GROUP_SIZE = 3
MAX_BANDS = 65535
MAX_TILE_SIZE = 4096

FLAG_GEOREF = 1 << 0
FLAG_REFERENCE = 1 << 1
_KNOWN_FLAGS = FLAG_GEOREF | FLAG_REFERENCE

_FIXED = struct.Struct("<4sBBH32sI")  # magic, major, minor, flags, model id, metadata length
_U32 = struct.Struct("<I")
_ENTRY = struct.Struct("<HBBIQII")  # band_group, kind, reserved, tile, offset, length, crc32
_KIND_NAMES = {KIND_Z: "z", KIND_Y: "y"}

_REQUIRED_FIELDS = ("band_groups", "bands", "config", "dtype", "extra", "height",
                    "latent_shape", "normalization", "pad", "quality", "tile_size", "width",
                    "z_shape")
_OPTIONAL_FIELDS = ("georef", "reference_id")
_GEOREF_FIELDS = ("crs_wkt", "nodata", "transform")

# Signatures of formats users are likely to pass by mistake; named in the error message.
_FOREIGN = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a BigTIFF image"), (b"MM\x00+", "a BigTIFF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 codestream"), (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"CDF\x01", "a NetCDF file"), (b"CDF\x02", "a NetCDF file"),
    (b"\x93NUMPY", "a NumPy .npy file"), (b"PK\x03\x04", "a ZIP archive (or .npz)"),
    (b"\x1f\x8b", "a gzip file"), (b"BM", "a BMP image"), (b"GIF8", "a GIF image"),
)


def _short(digest: bytes) -> str:
    return digest.hex()[:12]


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _field_error(name: str, message: str) -> CorruptError:
    return CorruptError(f"invalid stcm header field '{name}': {message}")


def _is_int(v: Any) -> bool:
    # bool is an int subclass, but True as a height is surely a bug (or a corrupt file).
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(name: str, v: Any, lo: int, hi: int | None = None) -> int:
    if _is_numpy_real(v) and v.dtype.kind in "ui":  # e.g. a size taken from array.shape
        v = int(v)
    if not _is_int(v):
        raise _field_error(name, f"must be an integer, got {type(v).__name__} {v!r:.60}")
    if v < lo or (hi is not None and v > hi):
        bound = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise _field_error(name, f"must be {bound}, got {v}")
    return int(v)


def _pair(name: str, v: Any, lo: int, hi: int | None = None) -> tuple[int, int]:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise _field_error(name, f"must be a pair of integers, got {v!r:.60}")
    return _int(name, v[0], lo, hi), _int(name, v[1], lo, hi)


def _canonical_json(value: Any) -> str:
    """The one serialisation stcm writes: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _json_copy(name: str, value: Any) -> dict:
    """Returns ``value`` exactly as a reader will see it after a JSON round trip.

    Tuples become lists and so on, so that ``read(write(header)).header == header``, and the
    caller's dict is not shared with the frozen header.
    """
    if not isinstance(value, dict):
        raise _field_error(name, f"must be a JSON object (dict), got {type(value).__name__}")
    try:
        text = _canonical_json(value)
        text.encode("utf-8")
        return json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _field_error(name, f"is not JSON-serialisable: {exc}") from exc


def tile_grid(latent_shape: tuple[int, int], tile_size: int) -> tuple[int, int]:
    """Number of tiles (down, across) that cover a latent of ``latent_shape`` positions.

    Tiles are ``tile_size`` x ``tile_size`` latent positions; the last row and column may be
    smaller. Tiles are numbered in raster order: tile = row * across + col.

    Args:
        latent_shape: (height, width) of the latent y, each >= 1.
        tile_size: Tile side in latent positions, >= 1.

    Raises:
        ValueError: A size is not a positive integer.

    >>> tile_grid((10, 4), 4)
    (3, 1)
    """
    if not _is_int(tile_size) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    if (not isinstance(latent_shape, (tuple, list)) or len(latent_shape) != 2
            or not all(_is_int(v) and v >= 1 for v in latent_shape)):
        raise ValueError(f"latent_shape must be two positive integers, got {latent_shape!r}")
    return -(-latent_shape[0] // tile_size), -(-latent_shape[1] // tile_size)


def num_tiles(latent_shape: tuple[int, int], tile_size: int) -> int:
    """Number of y tiles (and so of y streams per band group) of a latent.

    >>> num_tiles((10, 4), 4)
    3
    """
    down, across = tile_grid(latent_shape, tile_size)
    return down * across


@dataclass(frozen=True)
class Georeference:
    """Where an image lies on Earth, and which value marks missing pixels.

    Attributes:
        crs_wkt: Coordinate reference system as WKT, or None.
        transform: The 6 affine coefficients (a, b, c, d, e, f) of rasterio's ``Affine[:6]``,
            mapping (col, row) to (x, y): x = a*col + b*row + c, y = d*col + e*row + f; or None.
        nodata: The value of missing pixels (NaN and +-inf allowed), or None.

    Raises:
        CorruptError: A field has the wrong type, or the transform is not 6 finite numbers.

    >>> Georeference(None, (10, 0, 500000, 0, -10, 5000000), float("nan")).transform[0]
    10.0
    """

    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float] | None
    nodata: float | None

    def __post_init__(self):
        if self.crs_wkt is not None:
            if not isinstance(self.crs_wkt, str) or not self.crs_wkt:
                raise _field_error("georef.crs_wkt", f"must be a non-empty string or None, "
                                   f"got {self.crs_wkt!r:.60}")
            try:
                self.crs_wkt.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _field_error("georef.crs_wkt", f"is not encodable as UTF-8: {exc}") from exc
        if self.transform is not None:
            t = self.transform
            if (not isinstance(t, (tuple, list)) or len(t) != 6
                    or not all(_is_number(v) or _is_numpy_real(v) for v in t)):
                raise _field_error("georef.transform", f"must be 6 numbers or None, got {t!r:.80}")
            values = tuple(float(v) for v in t)
            if not all(math.isfinite(v) for v in values):
                raise _field_error("georef.transform", f"must be finite, got {values}")
            object.__setattr__(self, "transform", values)
        if self.nodata is not None:
            if not (_is_number(self.nodata) or _is_numpy_real(self.nodata)):
                raise _field_error("georef.nodata", f"must be a number or None, got "
                                   f"{self.nodata!r:.60}")
            object.__setattr__(self, "nodata", float(self.nodata))

    def __eq__(self, other):
        # NaN nodata must compare equal to itself, or no georeferenced header would round-trip.
        if not isinstance(other, Georeference):
            return NotImplemented
        same_nodata = (self.nodata == other.nodata or (
            self.nodata is not None and other.nodata is not None
            and math.isnan(self.nodata) and math.isnan(other.nodata)))
        return (self.crs_wkt, self.transform) == (other.crs_wkt, other.transform) and same_nodata

    def __hash__(self):
        nodata = "nan" if self.nodata is not None and math.isnan(self.nodata) else self.nodata
        return hash((self.crs_wkt, self.transform, nodata))

    def to_json(self) -> dict:
        """The metadata JSON object (nodata NaN/inf as the strings "nan", "inf", "-inf")."""
        nodata: Any = self.nodata
        if nodata is not None and not math.isfinite(nodata):
            nodata = "nan" if math.isnan(nodata) else ("inf" if nodata > 0 else "-inf")
        transform = list(self.transform) if self.transform is not None else None
        return {"crs_wkt": self.crs_wkt, "nodata": nodata, "transform": transform}

    @classmethod
    def from_json(cls, data: Any, strict: bool = True) -> Georeference:
        """Inverts ``to_json``; ``strict`` rejects unknown keys (a file of this minor version).

        Raises:
            CorruptError: Not an object with keys crs_wkt, nodata, transform, or a bad value.
        """
        if not isinstance(data, dict):
            raise _field_error("georef", f"must be a JSON object, got {type(data).__name__}")
        missing = [k for k in _GEOREF_FIELDS if k not in data]
        unknown = sorted(set(data) - set(_GEOREF_FIELDS))
        if missing or (strict and unknown):
            raise _field_error("georef", f"needs keys {list(_GEOREF_FIELDS)}; missing {missing}, "
                               f"unknown {unknown}")
        nodata = data["nodata"]
        if isinstance(nodata, str):
            special = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
            if nodata not in special:
                raise _field_error("georef.nodata", f"must be a number, null, \"nan\", \"inf\" "
                                   f"or \"-inf\", got {nodata!r:.60}")
            nodata = special[nodata]
        return cls(crs_wkt=data["crs_wkt"], transform=data["transform"], nodata=nodata)


def _is_numpy_real(v: Any) -> bool:
    # NumPy scalars (e.g. a nodata read from a raster) are accepted without importing NumPy.
    return type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "uif"


@dataclass(frozen=True)
class Header:
    """Everything about a compressed image except its streams.

    Construction validates every field and their consistency, so an invalid header cannot
    exist: the same checks guard writing and reading, and whatever is written can be read.
    ``for_image`` derives the geometric fields.

    Attributes:
        model_id: sha256 digest (32 bytes) of the model that wrote the container.
        config: The model config (``ModelConfig.to_dict()``), stored verbatim as JSON.
        height: Image rows, >= 1.
        width: Image columns, >= 1.
        bands: Image bands, 1..65535.
        dtype: NumPy dtype name of the pixels, one of ``DTYPES``.
        normalization: ``{"dtype": str, "lo": [..], "hi": [..]}``, one finite lo < hi per
            band (``BandNormalization.to_dict()``); its dtype equals ``dtype``.
        quality: The quality coded at, in [0, 1].
        pad: (rows, cols) replicated at the bottom/right so both sides divide 64; each < 64.
        latent_shape: (h, w) of y: the padded size / 16.
        tile_size: y tile side in latent positions, 1..4096.
        band_groups: Number of 3-band groups, ceil(bands / 3).
        z_shape: (h, w) of z: latent_shape / 4.
        georef: Georeferencing, or None.
        reference_id: ``container_id`` (sha256 of the whole container) of the temporal
            reference image, or None for an image coded alone.
        extra: Free-form JSON object for later fields; written and read as is.

    Raises:
        CorruptError: A field has the wrong type or range, or fields disagree; the message
            names the field.

    >>> h = Header.for_image(model_id=bytes(32), config={}, height=100, width=70, bands=4,
    ...                      dtype="uint16", normalization={"dtype": "uint16",
    ...                      "lo": [0, 0, 0, 0], "hi": [9000, 9000, 9000, 9000]},
    ...                      quality=0.5, tile_size=4)
    >>> h.pad, h.latent_shape, h.z_shape, h.band_groups
    ((28, 58), (8, 8), (2, 2), 2)
    """

    model_id: bytes
    config: dict
    height: int
    width: int
    bands: int
    dtype: str
    normalization: dict
    quality: float
    pad: tuple[int, int]
    latent_shape: tuple[int, int]
    tile_size: int
    band_groups: int
    z_shape: tuple[int, int]
    georef: Georeference | None = None
    reference_id: bytes | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name in ("model_id", "reference_id"):
            v = getattr(self, name)
            if v is None and name == "reference_id":
                continue
            if not isinstance(v, (bytes, bytearray, memoryview)) or len(bytes(v)) != 32:
                raise _field_error(name, f"must be 32 bytes (a sha256 digest), got {v!r:.80}")
            set_(name, bytes(v))
        set_("config", _json_copy("config", self.config))
        set_("extra", _json_copy("extra", self.extra))
        set_("height", _int("height", self.height, 1))
        set_("width", _int("width", self.width, 1))
        set_("bands", _int("bands", self.bands, 1, MAX_BANDS))
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise _field_error("dtype", f"must be one of {list(DTYPES)}, got {self.dtype!r:.60}")
        set_("normalization", self._check_normalization())
        q = self.quality
        if not (_is_number(q) or _is_numpy_real(q)) or not 0.0 <= float(q) <= 1.0:
            raise _field_error("quality", f"must be a number in [0, 1], got {q!r:.60}")
        set_("quality", float(q))
        set_("pad", _pair("pad", self.pad, 0, PAD_MULTIPLE - 1))
        set_("latent_shape", _pair("latent_shape", self.latent_shape, 1))
        set_("z_shape", _pair("z_shape", self.z_shape, 1))
        set_("tile_size", _int("tile_size", self.tile_size, 1, MAX_TILE_SIZE))
        set_("band_groups", _int("band_groups", self.band_groups, 1))
        if self.georef is not None and not isinstance(self.georef, Georeference):
            raise _field_error("georef", f"must be a Georeference or None, got "
                               f"{type(self.georef).__name__}")
        self._check_consistency()

    def _check_normalization(self) -> dict:
        norm = self.normalization
        if not isinstance(norm, dict) or set(norm) != {"dtype", "lo", "hi"}:
            keys = sorted(norm) if isinstance(norm, dict) else type(norm).__name__
            raise _field_error("normalization", f"must be an object with exactly dtype, lo, "
                               f"hi; got {keys}")
        if norm["dtype"] != self.dtype:
            raise _field_error("normalization", f"dtype {norm['dtype']!r:.30} differs from the "
                               f"image dtype {self.dtype!r}")
        out = {"dtype": self.dtype}
        for key in ("lo", "hi"):
            values = norm[key]
            if not isinstance(values, (list, tuple)) or len(values) != self.bands:
                raise _field_error("normalization", f"{key} must list one number per band "
                                   f"({self.bands}), got {values!r:.80}")
            if not all(_is_number(v) or _is_numpy_real(v) for v in values):
                raise _field_error("normalization", f"{key} holds a non-number: {values!r:.80}")
            out[key] = [float(v) for v in values]
            if not all(math.isfinite(v) for v in out[key]):
                raise _field_error("normalization", f"{key} holds a non-finite value")
        bad = [b for b, (lo, hi) in enumerate(zip(out["lo"], out["hi"])) if not hi > lo]
        if bad:
            raise _field_error("normalization", f"needs hi > lo for every band; band {bad[0]} "
                               f"has lo={out['lo'][bad[0]]} hi={out['hi'][bad[0]]}")
        return out

    def _check_consistency(self) -> None:
        groups = -(-self.bands // BAND_GROUP_SIZE)
        if self.band_groups != groups:
            raise _field_error("band_groups", f"is {self.band_groups} but {self.bands} bands "
                               f"need {groups}")
        padded = (self.height + self.pad[0], self.width + self.pad[1])
        if padded[0] % PAD_MULTIPLE or padded[1] % PAD_MULTIPLE:
            raise _field_error("pad", f"{list(self.pad)} does not pad {self.height}x{self.width} "
                               f"to multiples of {PAD_MULTIPLE}")
        latent = (padded[0] // DOWNSAMPLE, padded[1] // DOWNSAMPLE)
        if self.latent_shape != latent:
            raise _field_error("latent_shape", f"is {list(self.latent_shape)} but the padded "
                               f"image {padded[0]}x{padded[1]} gives {list(latent)}")
        z = (latent[0] // HYPER_DOWNSAMPLE, latent[1] // HYPER_DOWNSAMPLE)
        if self.z_shape != z:
            raise _field_error("z_shape", f"is {list(self.z_shape)} but latent_shape "
                               f"{list(latent)} gives {list(z)}")
        if num_tiles(latent, self.tile_size) > 0xFFFFFFFF:
            raise _field_error("tile_size", f"{self.tile_size} gives more tiles than fit in u32")

    @classmethod
    def for_image(cls, *, model_id: bytes, config: dict, height: int, width: int, bands: int,
                  dtype: str, normalization: dict, quality: float, tile_size: int,
                  georef: Georeference | None = None, reference_id: bytes | None = None,
                  extra: dict | None = None) -> Header:
        """Builds a header, deriving pad, latent_shape, z_shape and band_groups.

        Raises:
            CorruptError: As the constructor.
        """
        _int("height", height, 1)
        _int("width", width, 1)
        _int("bands", bands, 1, MAX_BANDS)
        pad = ((-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE)
        latent = ((height + pad[0]) // DOWNSAMPLE, (width + pad[1]) // DOWNSAMPLE)
        return cls(model_id=model_id, config=config, height=height, width=width, bands=bands,
                   dtype=dtype, normalization=normalization, quality=quality, pad=pad,
                   latent_shape=latent, tile_size=tile_size,
                   band_groups=-(-bands // BAND_GROUP_SIZE),
                   z_shape=(latent[0] // HYPER_DOWNSAMPLE, latent[1] // HYPER_DOWNSAMPLE),
                   georef=georef, reference_id=reference_id,
                   extra={} if extra is None else extra)

    @property
    def tiles(self) -> int:
        """Number of y tiles per band group."""
        return num_tiles(self.latent_shape, self.tile_size)

    @property
    def num_streams(self) -> int:
        """Streams in the container: per band group one z stream and one y stream per tile."""
        return self.band_groups * (1 + self.tiles)

    def stream_keys(self) -> Iterator[tuple[int, int, int]]:
        """The (band_group, kind, tile) of every stream, in the order of the stream table."""
        for g in range(self.band_groups):
            yield g, KIND_Z, 0
            for t in range(self.tiles):
                yield g, KIND_Y, t

    def stream_index(self, band_group: int, kind: int, tile: int) -> int:
        """Position of a stream in the table, computed (the table is in key order).

        Raises:
            KeyError: No such stream in a container with this header.
        """
        ok = (_is_int(band_group) and 0 <= band_group < self.band_groups and _is_int(tile)
              and ((kind == KIND_Z and tile == 0) or (kind == KIND_Y and 0 <= tile < self.tiles)))
        if not ok:
            raise KeyError(f"no stream (band_group={band_group!r}, kind={kind!r}, tile={tile!r})"
                           f": the container has band groups 0..{self.band_groups - 1}, kind 0 "
                           f"(z, tile 0) and kind 1 (y, tiles 0..{self.tiles - 1})")
        return band_group * (1 + self.tiles) + (0 if kind == KIND_Z else 1 + tile)

    def to_json(self) -> dict:
        """The metadata JSON object (everything but model_id, which is in the fixed header)."""
        meta = {
            "band_groups": self.band_groups, "bands": self.bands, "config": self.config,
            "dtype": self.dtype, "extra": self.extra, "height": self.height,
            "latent_shape": list(self.latent_shape), "normalization": self.normalization,
            "pad": list(self.pad), "quality": self.quality, "tile_size": self.tile_size,
            "width": self.width, "z_shape": list(self.z_shape),
        }
        if self.georef is not None:
            meta["georef"] = self.georef.to_json()
        if self.reference_id is not None:
            meta["reference_id"] = self.reference_id.hex()
        return meta

    @property
    def flags(self) -> int:
        """The flags word of the fixed header."""
        return ((FLAG_GEOREF if self.georef is not None else 0)
                | (FLAG_REFERENCE if self.reference_id is not None else 0))


@dataclass(frozen=True)
class StreamEntry:
    """One row of the stream table.

    Attributes:
        band_group: Band group index, 0..band_groups-1.
        kind: ``KIND_Z`` (0, the hyper latent; tile is 0) or ``KIND_Y`` (1, one latent tile).
        tile: Tile index in raster order (see ``tile_grid``).
        offset: Byte offset of the stream from the start of the payload.
        length: Stream length in bytes.
        crc32: CRC32 of the stream's bytes.
    """

    band_group: int
    kind: int
    tile: int
    offset: int
    length: int
    crc32: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.band_group, self.kind, self.tile


def _describe(key: tuple[int, int, int]) -> str:
    g, kind, tile = key
    return f"band group {g}, {_KIND_NAMES.get(kind, kind)} stream, tile {tile}"


@dataclass(frozen=True)
class Container:
    """A read container: its validated header, stream table and the whole file's bytes.

    Build it with ``read_container``, which checks everything but the streams' own CRC32s;
    ``stream`` checks those one at a time.

    Attributes:
        header: The metadata.
        entries: The stream table, in (band_group, kind, tile) order.
        data: The whole container.
    """

    header: Header
    entries: tuple[StreamEntry, ...]
    data: bytes

    @property
    def payload_start(self) -> int:
        """Offset of the payload (the first stream) in ``data``."""
        (metadata_len,) = _U32.unpack_from(self.data, 40)
        return _FIXED.size + metadata_len + 4 + 4 + _ENTRY.size * len(self.entries) + 4

    def stream(self, band_group: int, kind: int, tile: int) -> bytes:
        """Returns one stream after checking its CRC32.

        Raises:
            KeyError: The container has no such stream.
            CorruptError: The stream's bytes do not match its CRC32; names the stream.
        """
        entry = self.entries[self.header.stream_index(band_group, kind, tile)]
        start = self.payload_start + entry.offset
        chunk = self.data[start:start + entry.length]
        crc = _crc(chunk)
        if crc != entry.crc32:
            raise CorruptError(f"corrupt stcm stream ({_describe(entry.key)}): CRC32 is "
                               f"{crc:#010x}, the stream table says {entry.crc32:#010x}")
        return chunk

    def verify(self) -> None:
        """Checks every stream's CRC32.

        Raises:
            CorruptError: For the first stream that does not match.
        """
        for entry in self.entries:
            self.stream(*entry.key)

    @property
    def bits_per_pixel(self) -> float:
        """Whole-file size in bits per image pixel (all bands together)."""
        return 8 * len(self.data) / (self.header.height * self.header.width)

    @property
    def container_id(self) -> bytes:
        """sha256 of the whole container: what later images of a series store as reference_id."""
        return hashlib.sha256(self.data).digest()


def write_container(header: Header, streams: dict[tuple[int, int, int], bytes]) -> bytes:
    """Serialises a header and its streams into a container.

    Args:
        header: The metadata.
        streams: Bytes per (band_group, kind, tile): for every band group, one z stream
            (``KIND_Z``, tile 0) and one y stream (``KIND_Y``) per tile, nothing else.

    Returns:
        The container; streams are laid out in sorted key order.

    Raises:
        CorruptError: A stream is missing, unexpected, not bytes or longer than 4 GiB - 1, or
            the metadata exceeds 1 MiB. (An invalid header cannot be constructed.)

    >>> h = Header.for_image(model_id=bytes(32), config={"name": "tiny"}, height=64, width=64,
    ...                      bands=1, dtype="uint8",
    ...                      normalization={"dtype": "uint8", "lo": [0], "hi": [255]},
    ...                      quality=0.75, tile_size=4)
    >>> data = write_container(h, {(0, KIND_Z, 0): b"zz", (0, KIND_Y, 0): b"yyy"})
    >>> c = read_container(data)
    >>> c.header == h, c.stream(0, KIND_Y, 0), len(data) == c.payload_start + 5
    (True, b'yyy', True)
    """
    if not isinstance(header, Header):
        raise TypeError(f"header must be a Header, got {type(header).__name__}")
    if not isinstance(streams, dict):
        raise TypeError(f"streams must be a dict of (band_group, kind, tile) -> bytes, got "
                        f"{type(streams).__name__}")
    for key, value in streams.items():
        try:
            header.stream_index(*key)
        except (KeyError, TypeError):
            raise CorruptError(f"cannot write stcm container: unexpected stream key {key!r}; "
                               f"expected (band_group, kind, tile) with band groups "
                               f"0..{header.band_groups - 1}, kind 0 (tile 0) or 1 (tiles "
                               f"0..{header.tiles - 1})") from None
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise CorruptError(f"cannot write stcm container: stream {key} is "
                               f"{type(value).__name__}, not bytes")
        if len(value) > 0xFFFFFFFF:
            raise CorruptError(f"cannot write stcm container: stream {key} has {len(value)} "
                               "bytes, more than a stream may hold (4 GiB - 1)")
    if len(streams) != header.num_streams:
        # Every key is valid and distinct, so some expected key is missing; the first few
        # are found within len(streams) + 5 expected keys.
        missing = []
        for key in header.stream_keys():
            if key not in streams:
                missing.append(key)
                if len(missing) == 5:
                    break
        raise CorruptError(f"cannot write stcm container: expected {header.num_streams} streams "
                           f"({header.band_groups} band groups x (1 z + {header.tiles} y tiles)), "
                           f"got {len(streams)}; missing {missing}")
    metadata = _canonical_json(header.to_json()).encode("utf-8")
    if len(metadata) > MAX_METADATA_BYTES:
        raise CorruptError(f"cannot write stcm container: metadata is {len(metadata)} bytes, "
                           f"more than the {MAX_METADATA_BYTES} allowed (large config or extra?)")
    head = _FIXED.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, header.flags, header.model_id,
                       len(metadata)) + metadata
    parts = [head, _U32.pack(_crc(head))]
    table = [_U32.pack(header.num_streams)]
    offset = 0
    for key in header.stream_keys():  # sorted key order
        chunk = streams[key]
        table.append(_ENTRY.pack(key[0], key[1], 0, key[2], offset, len(chunk), _crc(chunk)))
        offset += len(chunk)
    table_bytes = b"".join(table)
    parts += [table_bytes, _U32.pack(_crc(table_bytes))]
    parts += [bytes(streams[key]) for key in header.stream_keys()]
    return b"".join(parts)


def _check_magic(data: bytes) -> None:
    if not data:
        raise NotStcmFileError("not an stcm file: the input is empty")
    if data[:4] == MAGIC:
        return
    if MAGIC.startswith(data):
        raise TruncatedError(f"truncated stcm file: expected at least {_FIXED.size} bytes, "
                             f"got {len(data)}")
    kind = next((name for sig, name in _FOREIGN if data.startswith(sig)), None)
    if kind is None:
        stripped = data[:64].lstrip()
        if stripped[:1] in (b"{", b"["):
            kind = "JSON text"
        elif len(data) >= 9 and data[8:9] == b"{":
            kind = "a safetensors file (a model checkpoint?)"
        elif data[8:12] == b"WEBP" and data[:4] == b"RIFF":
            kind = "a WebP image"
    what = f"it looks like {kind}" if kind else f"it starts with {data[:8]!r}"
    raise NotStcmFileError(f"not an stcm file (no {MAGIC!r} magic): {what}")


def _parse_json(raw: bytes) -> dict:
    def pairs(items):
        seen = {}
        for k, v in items:
            if k in seen:
                raise ValueError(f"duplicate key {k!r:.40}")
            seen[k] = v
        return seen

    def no_constant(name):
        raise ValueError(f"{name} is not valid JSON (write NaN/inf as strings)")

    try:
        meta = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        raise CorruptError(f"corrupt stcm metadata: not UTF-8 ({exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptError(f"corrupt stcm metadata: not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(meta, dict):
        raise CorruptError(f"corrupt stcm metadata: must be a JSON object, got "
                           f"{type(meta).__name__}")
    return meta


def _header_from_json(meta: dict, model_id: bytes, flags: int, minor: int) -> Header:
    newer = minor > FORMAT_MINOR  # a newer minor may add fields we must ignore
    missing = [k for k in _REQUIRED_FIELDS if k not in meta]
    unknown = sorted(set(meta) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if missing:
        raise CorruptError(f"corrupt stcm metadata: missing fields {missing}")
    if unknown and not newer:
        raise CorruptError(f"corrupt stcm metadata: unknown fields {unknown[:10]} in a "
                           f"version {FORMAT_MAJOR}.{minor} file")
    for name, bit in (("georef", FLAG_GEOREF), ("reference_id", FLAG_REFERENCE)):
        if (name in meta) != bool(flags & bit):
            raise CorruptError(f"corrupt stcm header: flag bit {bit.bit_length() - 1} says "
                               f"{name} is {'present' if flags & bit else 'absent'}, the "
                               f"metadata says otherwise")
    georef = Georeference.from_json(meta["georef"], strict=not newer) if "georef" in meta else None
    reference_id = None
    if "reference_id" in meta:
        ref = meta["reference_id"]
        if not isinstance(ref, str) or len(ref) != 64 or ref != ref.lower():
            raise _field_error("reference_id", f"must be 64 lowercase hex digits, got {ref!r:.80}")
        try:
            reference_id = bytes.fromhex(ref)
        except ValueError:
            raise _field_error("reference_id", f"is not hex: {ref!r:.80}") from None
    values = {k: meta[k] for k in _REQUIRED_FIELDS}
    return Header(model_id=model_id, georef=georef, reference_id=reference_id, **values)


def _read_header(data: bytes, max_pixels: int) -> tuple[Header, int]:
    """Validates magic, version, header and metadata; returns the header and where it ends."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the container's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not _is_int(max_pixels) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    _check_magic(data)
    if len(data) > 4 and data[4] != FORMAT_MAJOR:
        minor = f".{data[5]}" if len(data) > 5 else ""
        raise UnsupportedVersionError(
            f"stcm format version {data[4]}{minor} is not supported: this stcm reads version "
            f"{FORMAT_MAJOR}.x" + ("; upgrade stcm" if data[4] > FORMAT_MAJOR else ""))
    if len(data) < _FIXED.size:
        raise TruncatedError(f"truncated stcm file: expected at least {_FIXED.size} bytes for "
                             f"the fixed header, got {len(data)}")
    _, _, minor, flags, model_id, metadata_len = _FIXED.unpack_from(data)
    if metadata_len > MAX_METADATA_BYTES:
        raise CorruptError(f"corrupt stcm header: metadata length {metadata_len} exceeds the "
                           f"{MAX_METADATA_BYTES}-byte limit")
    crc_at = _FIXED.size + metadata_len
    if len(data) < crc_at + 4:
        raise TruncatedError(f"truncated stcm file: expected at least {crc_at + 4} bytes for "
                             f"the header and metadata, got {len(data)}")
    (stored,) = _U32.unpack_from(data, crc_at)
    actual = _crc(memoryview(data)[:crc_at])
    if stored != actual:
        raise CorruptError(f"corrupt stcm header: CRC32 is {actual:#010x}, the file says "
                           f"{stored:#010x}")
    if flags & ~_KNOWN_FLAGS:
        raise CorruptError(f"corrupt stcm header: unknown flag bits {flags & ~_KNOWN_FLAGS:#06x}")
    meta = _parse_json(bytes(data[_FIXED.size:crc_at]))
    header = _header_from_json(meta, bytes(model_id), flags, minor)
    values = header.height * header.width * header.bands
    if values > max_pixels:
        raise CorruptError(f"stcm header claims {header.height}x{header.width} pixels x "
                           f"{header.bands} bands = {values} values, more than max_pixels = "
                           f"{max_pixels}; pass a larger max_pixels if that is real")
    return header, crc_at + 4


def peek_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Reads and validates only the header; ``data`` may be just the start of a file.

    Raises:
        ContainerError: As ``read_container``, for the header part.

    >>> h = Header.for_image(model_id=bytes(32), config={}, height=64, width=64, bands=1,
    ...                      dtype="uint8", normalization={"dtype": "uint8", "lo": [0],
    ...                      "hi": [255]}, quality=1.0, tile_size=4)
    >>> data = write_container(h, {(0, KIND_Z, 0): b"", (0, KIND_Y, 0): b""})
    >>> peek_header(data[:-10]).height  # the streams need not be there
    64
    """
    return _read_header(data, max_pixels)[0]


def read_container(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    """Parses and validates a container (all but the streams' own CRC32s; see ``stream``).

    Args:
        data: The whole container.
        max_pixels: Refuse images of more than this many values (height * width * bands),
            before anything of that size is allocated.

    Raises:
        NotStcmFileError: Empty input or no ``STCM`` magic (names common other formats).
        UnsupportedVersionError: A format major version other than 1.
        TruncatedError: The data ends early; says how many bytes were expected and present.
        CorruptError: A checksum, length, field or stream table entry is wrong, or bytes
            follow the last stream.

    >>> read_container(b"\\x89PNG\\r\\n\\x1a\\n....")
    Traceback (most recent call last):
    ...
    stcm.errors.NotStcmFileError: not an stcm file (no b'STCM' magic): it looks like a PNG image
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    header, pos = _read_header(data, max_pixels)
    if len(data) < pos + 4:
        raise TruncatedError(f"truncated stcm file: expected at least {pos + 4} bytes for the "
                             f"stream count, got {len(data)}")
    (count,) = _U32.unpack_from(data, pos)
    if count != header.num_streams:
        raise CorruptError(f"corrupt stcm stream table: {count} streams, the header needs "
                           f"{header.num_streams} ({header.band_groups} band groups x "
                           f"(1 z + {header.tiles} y tiles))")
    table_end = pos + 4 + _ENTRY.size * count
    if len(data) < table_end + 4:
        raise TruncatedError(f"truncated stcm file: expected at least {table_end + 4} bytes for "
                             f"the stream table, got {len(data)}")
    (stored,) = _U32.unpack_from(data, table_end)
    actual = _crc(memoryview(data)[pos:table_end])
    if stored != actual:
        raise CorruptError(f"corrupt stcm stream table: CRC32 is {actual:#010x}, the file says "
                           f"{stored:#010x}")
    # count is now bounded by the data actually present, so this is proportional to it.
    entries = []
    rows = _ENTRY.iter_unpack(memoryview(data)[pos + 4:table_end])
    for i, (row, key) in enumerate(zip(rows, header.stream_keys())):
        group, kind, reserved, tile, offset, length, crc = row
        if (group, kind, tile) != key:
            raise CorruptError(f"corrupt stcm stream table: entry {i} is {(group, kind, tile)}, "
                               f"expected {key} (entries are in (band_group, kind, tile) order)")
        if reserved != 0:
            raise CorruptError(f"corrupt stcm stream table: entry {i} has reserved byte "
                               f"{reserved}, must be 0")
        entries.append(StreamEntry(group, kind, tile, offset, length, crc))
    # The streams must tile the payload exactly: no overlap, no gap, nothing after the last.
    payload_start = table_end + 4
    payload_len = len(data) - payload_start
    cursor = 0
    for entry in sorted(entries, key=lambda e: (e.offset, e.length)):
        if entry.offset != cursor:
            problem = "overlaps the previous stream" if entry.offset < cursor else (
                f"leaves payload bytes {cursor}..{entry.offset - 1} unused")
            raise CorruptError(f"corrupt stcm stream table: {_describe(entry.key)} at offset "
                               f"{entry.offset} {problem}")
        cursor += entry.length
    if cursor > payload_len:
        raise TruncatedError(f"truncated stcm file: expected {payload_start + cursor} bytes, "
                             f"got {len(data)}")
    if cursor < payload_len:
        raise CorruptError(f"corrupt stcm file: {payload_len - cursor} bytes of trailing garbage "
                           f"after the last stream (expected {payload_start + cursor} bytes, "
                           f"got {len(data)})")
    return Container(header=header, entries=tuple(entries), data=data)


def check_model(container: Container, model_id: bytes) -> None:
    """Checks that a container was written by the model with id ``model_id``.

    Raises:
        ModelMismatchError: It was written by another model.

    >>> h = Header.for_image(model_id=b"\\x01" * 32, config={}, height=64, width=64, bands=1,
    ...                      dtype="uint8", normalization={"dtype": "uint8", "lo": [0],
    ...                      "hi": [255]}, quality=1.0, tile_size=4)
    >>> c = read_container(write_container(h, {(0, KIND_Z, 0): b"", (0, KIND_Y, 0): b""}))
    >>> check_model(c, b"\\x02" * 32)
    Traceback (most recent call last):
    ...
    stcm.errors.ModelMismatchError: the file was written by model 010101010101 but ...
    """
    if not isinstance(model_id, (bytes, bytearray)) or len(model_id) != 32:
        raise ValueError(f"model_id must be 32 bytes (a sha256 digest), got {model_id!r:.80}")
    if container.header.model_id != bytes(model_id):
        raise ModelMismatchError(f"the file was written by model "
                                 f"{_short(container.header.model_id)} but the codec has "
                                 f"{_short(bytes(model_id))}; use the same model/engine")


def check_reference(container: Container, reference: bytes | None) -> None:
    """Checks that ``reference`` (a whole container) is the one ``container`` was coded against.

    Args:
        container: An image of a series.
        reference: The container of its reference image, or None when none is at hand.

    Raises:
        ModelMismatchError: The image needs a reference and none or another one was given, or
            it was coded alone and a reference was given.
    """
    wanted = container.header.reference_id
    if wanted is None:
        if reference is not None:
            raise ModelMismatchError("this image was coded without a temporal reference; "
                                     "decode it without one")
        return
    if reference is None:
        raise ModelMismatchError(f"this image was coded against reference {_short(wanted)}; "
                                 "give that container as the reference")
    got = hashlib.sha256(reference).digest()
    if got != wanted:
        raise ModelMismatchError(f"the given reference is container {_short(got)}, but this "
                                 f"image was coded against {_short(wanted)}")
