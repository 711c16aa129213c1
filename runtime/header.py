"""The per-image header of an stcm container: what a decoder needs besides the model, as a
compact binary record (``docs/format.md`` gives it byte by byte).

The model id pins the architecture, the coding tables and the quality rule, so the header
holds only the image: its size, bands, dtype and per-band range, the quality, the tile size,
and, only when present, the temporal reference, georeferencing, non-exact numerics, a JSON
object of application fields and the mask of missing samples. An 8-bit RGB image takes 32
bytes, a 4-band uint16 one ~55.

``Header`` validates every field on construction, so an invalid header cannot exist: the same
checks guard writing and reading. Torch is not imported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from stcm.errors import CorruptError, ImageTooLargeError, TruncatedError
from stcm.runtime.fields import (F64, MAX_JSON_BYTES, U16, ByteReader, canonical_json,
                                 field_error, int_field, is_int, is_number, json_object,
                                 parse_json_object, unzigzag, write_varint, zigzag)
from stcm.runtime.georeference import Georeference
from stcm.runtime.mask import SampleMask
from stcm.runtime.metadata import EXTRA_GEOREF, check_extra

__all__ = ["DTYPES", "MODEL_ID_BYTES", "QUALITY_STEPS", "Header", "ReferenceGrid",
           "quality_on_grid", "tile_grid", "num_tiles"]

DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
_INTEGER_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32")
# What ``stcm.bands.normalize`` can produce: integer lo within the dtype and hi within it too,
# or lo + 1 for a constant band; float32 lo, hi within float32 and hi - lo finite, so that
# decoding (x * (hi - lo) + lo) never saturates or overflows to inf.
_INTEGER_RANGES = {"uint8": (0, 255), "uint16": (0, 65535), "int16": (-32768, 32767),
                   "uint32": (0, 2 ** 32 - 1), "int32": (-2 ** 31, 2 ** 31 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38

# Mirrors stcm.models.transforms (which imports torch): g_a halves the image 4 times, h_a twice
# more, so the image is padded to a multiple of 64 and the latents are 1/16 and 1/64 of it.
DOWNSAMPLE = 16
HYPER_DOWNSAMPLE = 4
PAD_MULTIPLE = DOWNSAMPLE * HYPER_DOWNSAMPLE
BAND_GROUP_SIZE = 3
MAX_BANDS = 65535
MAX_SIDE = 2 ** 31 - 1
MAX_TILE_SIZE = 4096
# height * width * bands; a reader's resource limit, not part of the format. 2**31 lets a whole
# Sentinel-2 tile with all 13 bands at 10 m (1.57e9 values) decode by default and refuses
# anything much larger before any work; services decoding untrusted files set their own.
DEFAULT_MAX_PIXELS = 2 ** 31
#: Ids are the first 16 bytes of a sha256 digest: 128 bits tell models and references apart
#: (they identify, they do not authenticate) and save 32 bytes per image.
MODEL_ID_BYTES = 16
#: Quality is stored as k / QUALITY_STEPS, k a u16; the encoder codes at that very value.
QUALITY_STEPS = 65535

KIND_Z, KIND_Y = 0, 1  # stream kinds: the hyper latent z of a band group, one tile of y

FLAG_GEOREF = 1 << 0
FLAG_REFERENCE = 1 << 1
FLAG_NUMERICS = 1 << 2
FLAG_EXTRA = 1 << 3
FLAG_DTYPE_RANGE = 1 << 4  # every band normalised by the dtype's own range (uint8: 0..255)
FLAG_INTRA_TILES = 1 << 5  # a bitmap of tiles coded without the temporal reference follows
FLAG_REFERENCE_GRID = 1 << 6  # the reference lies on another pixel grid: its mapping follows
FLAG_MASK = 1 << 7  # some samples are missing (nodata): their bit planes follow
KNOWN_FLAGS = (FLAG_GEOREF | FLAG_REFERENCE | FLAG_NUMERICS | FLAG_EXTRA | FLAG_DTYPE_RANGE
               | FLAG_INTRA_TILES | FLAG_REFERENCE_GRID | FLAG_MASK)

#: The mapping of a reference on this image's own grid (``runtime.grids``); never stored.
IDENTITY_GRID = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Bit 7 of a reference grid's ``top`` byte (format 3.1): the grid is ``shifted``. A 3.0
# reader refuses it (top > 15) rather than misreading it.
SHIFTED_GRID_BIT = 0x80
# A stored mapping scales by at most this much either way (a reference with 16x finer or
# coarser pixels says nothing position by position) and moves origins at most MAX_SIDE.
MAX_GRID_SCALE = 16.0

#: The numerics tag of exact entropy stages (the same integers on every backend and device,
#: ``runtime.backends``); implied by a header, not stored.
EXACT_NUMERICS = "exact-int24"


def quality_on_grid(quality: float) -> float:
    """The quality a header stores for ``quality``: the nearest k / 65535 in [0, 1].

    >>> quality_on_grid(0.75) == 49151 / 65535
    True
    """
    if not is_number(quality) or not 0.0 <= float(quality) <= 1.0:
        raise field_error("quality", f"must be a number in [0, 1], got {quality!r:.60}")
    return round(float(quality) * QUALITY_STEPS) / QUALITY_STEPS



# -- tiles ------------------------------------------------------------------------------------
def tile_grid(latent_shape: tuple[int, int], tile_size: int) -> tuple[int, int]:
    """Number of tiles (down, across) that cover a latent of ``latent_shape`` positions.

    Tiles are ``tile_size`` x ``tile_size`` latent positions; the last row and column may be
    smaller. Tiles are numbered in raster order: tile = row * across + col.

    Raises:
        ValueError: A size is not a positive integer.

    >>> tile_grid((10, 4), 4)
    (3, 1)
    """
    if not is_int(tile_size) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    if (not isinstance(latent_shape, (tuple, list)) or len(latent_shape) != 2
            or not all(is_int(v) and v >= 1 for v in latent_shape)):
        raise ValueError(f"latent_shape must be two positive integers, got {latent_shape!r}")
    return -(-latent_shape[0] // tile_size), -(-latent_shape[1] // tile_size)


def num_tiles(latent_shape: tuple[int, int], tile_size: int) -> int:
    """Number of y tiles (and so of y streams per band group) of a latent.

    >>> num_tiles((10, 4), 4)
    3
    """
    down, across = tile_grid(latent_shape, tile_size)
    return down * across


def check_mapping(mapping: Any) -> tuple[float, ...]:
    """A mapping (a, b, c, d, e, f) of pixel coordinates onto a reference's as 6 floats
    (``runtime.grids``), or CorruptError: not 6 finite numbers, a 2x2 part that is singular
    or scales by more than ``MAX_GRID_SCALE``, or an origin beyond ``MAX_SIDE``."""
    if (not isinstance(mapping, (tuple, list)) or len(mapping) != 6
            or not all(is_number(v) for v in mapping)):
        raise field_error("reference_grid", f"must be 6 numbers, got {mapping!r:.80}")
    a, b, c, d, e, f = values = tuple(float(v) for v in mapping)
    if not all(math.isfinite(v) for v in values):
        raise field_error("reference_grid", f"must be finite, got {values}")
    det = abs(a * e - b * d)
    if (max(abs(a), abs(b), abs(d), abs(e)) > MAX_GRID_SCALE
            or not det >= MAX_GRID_SCALE ** -2):
        raise field_error("reference_grid", f"scales pixels by more than {MAX_GRID_SCALE:g}x "
                          f"or is singular: {values}")
    if max(abs(c), abs(f)) > MAX_SIDE:
        raise field_error("reference_grid", f"moves the origin beyond {MAX_SIDE} pixels: "
                          f"{values}")
    return values


@dataclass(frozen=True)
class ReferenceGrid:
    """Where the temporal reference lies against an image that is not on its grid.

    Attributes:
        origin: (top, left), 0..15 each: rows and columns of replicated edge coded before the
            image, so that the coded canvas's latent positions (16 pixels each) line up with
            the reference's; the decoder crops them off.
        mapping: (a, b, c, d, e, f): pixel (col, row) of the canvas lies at
            (a*col + b*row + c, d*col + e*row + f) of the reference (``runtime.grids``).
        shifted: (format 3.1) the mapping is a translation by whole pixels, not all whole
            latent positions, on origin (0, 0): the reference's latent moves by whole
            positions and by the remainder with the model's latent shift tables
            (``stcm.shift_tables``). Stored as bit 7 of the ``top`` byte.

    Raises:
        CorruptError: A field is out of range, or the grid is the reference's own (origin 0
            and the identity mapping; not stored).
    """

    origin: tuple[int, int] = (0, 0)
    mapping: tuple[float, ...] = IDENTITY_GRID
    shifted: bool = False

    def __post_init__(self):
        origin = self.origin
        if (not isinstance(origin, (tuple, list)) or len(origin) != 2
                or not all(is_int(v) and 0 <= v < DOWNSAMPLE for v in origin)):
            raise field_error("reference_grid.origin", f"must be 2 integers in "
                              f"0..{DOWNSAMPLE - 1}, got {origin!r:.60}")
        object.__setattr__(self, "origin", (int(origin[0]), int(origin[1])))
        object.__setattr__(self, "mapping", check_mapping(self.mapping))
        if self.origin == (0, 0) and self.mapping == IDENTITY_GRID:
            raise field_error("reference_grid", "the reference's own grid is not stored (not "
                              "canonical)")
        if not isinstance(self.shifted, bool):
            raise field_error("reference_grid.shifted", f"must be a bool, got {self.shifted!r}")
        if self.shifted:
            a, b, c, d, e, f = self.mapping
            if (self.origin != (0, 0) or (a, b, d, e) != (1.0, 0.0, 0.0, 1.0)
                    or c != int(c) or f != int(f)):
                raise field_error("reference_grid", "a shifted grid is a translation by whole "
                                  f"pixels on origin (0, 0), got origin {self.origin}, "
                                  f"mapping {self.mapping}")
            if c % DOWNSAMPLE == 0 and f % DOWNSAMPLE == 0:
                raise field_error("reference_grid", "a shift by whole latent positions is not "
                                  "shifted (not canonical)")

    def to_bytes(self) -> bytes:
        top, left = self.origin
        return (bytes((top | (SHIFTED_GRID_BIT if self.shifted else 0), left))
                + b"".join(F64.pack(v) for v in self.mapping))

    @classmethod
    def from_reader(cls, reader: ByteReader) -> ReferenceGrid:
        top, left = reader.u8("reference grid top"), reader.u8("reference grid left")
        return cls((top & ~SHIFTED_GRID_BIT, left),
                   tuple(reader.f64(f"reference grid [{i}]") for i in range(6)),
                   bool(top & SHIFTED_GRID_BIT))


# -- the header -------------------------------------------------------------------------------
def padding_of(height: int, width: int) -> tuple[int, int]:
    """(rows, cols) replicated at the bottom/right so both sides divide 64."""
    return (-height) % PAD_MULTIPLE, (-width) % PAD_MULTIPLE


def check_size(height: int, width: int, bands: int, max_pixels: int) -> None:
    """ImageTooLargeError when an image claims more than ``max_pixels`` values (a reader's
    limit), before anything is allocated for it."""
    values = height * width * bands
    if values > max_pixels:
        raise ImageTooLargeError(
            f"stcm header claims {height}x{width} pixels x {bands} bands = {values} values, "
            f"more than max_pixels = {max_pixels}; pass a larger max_pixels (stcm decompress "
            "--max-pixels) if the image is real")


def latent_shape_of(height: int, width: int) -> tuple[int, int]:
    """(h, w) of y for an image: the padded size / 16 (also needed before a Header exists)."""
    ph, pw = padding_of(height, width)
    return (height + ph) // DOWNSAMPLE, (width + pw) // DOWNSAMPLE


# Pixels around the image within which a latent cell is still coded (format 3.0): a cell
# that only covers padding but ends within FOOTPRINT_MARGIN pixels of the image shapes the
# image's edge through g_s. Measured on the built-in model (stage 8): coding no cell that
# lies wholly in the padding cost 0.14-0.31 dB on a 400^2 image (its edge on a cell border);
# one more cell there kept the PSNR within 0.01 dB; 8 pixels keeps it exactly there.
FOOTPRINT_MARGIN = 8


def footprint_of(top: int, left: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, col0, rows, cols): the latent positions whose 16 x 16 pixels, grown by
    ``FOOTPRINT_MARGIN`` on each side, hold some of an image of ``height`` x ``width`` pixels
    that starts ``top`` rows and ``left`` columns into its canvas. The others cover only
    replicated padding away from the image: format 3.0 codes no symbol there, they decode to
    their predicted mean (``Header.footprint``)."""
    m, d = FOOTPRINT_MARGIN, DOWNSAMPLE
    r0, c0 = max(top - m, 0) // d, max(left - m, 0) // d
    return r0, c0, -(-(top + height + m) // d) - r0, -(-(left + width + m) // d) - c0


@dataclass(frozen=True)
class Header:
    """Everything about a compressed image except its streams.

    Attributes:
        model_id: The first 16 bytes of the sha256 model id of the model that wrote it.
        height: Image rows, 1..2^31-1.
        width: Image columns, 1..2^31-1.
        bands: Image bands, 1..65535.
        dtype: NumPy dtype name of the pixels, one of ``DTYPES``.
        normalization: ``{"dtype": str, "lo": [..], "hi": [..]}``, one finite lo < hi per
            band (``BandNormalization.to_dict()``); its dtype equals ``dtype``; integers for
            integer dtypes.
        quality: The quality coded at, on the grid k / 65535 (``quality_on_grid``; other
            values are moved to the grid).
        tile_size: y tile side in latent positions, 1..4096.
        reference_id: The first 16 bytes of the sha256 of the temporal reference's whole
            container, or None for an image coded alone.
        georef: Georeferencing, or None.
        numerics: The arithmetic of the entropy path; ``"exact-int24"`` (exact models, any
            backend) is implied and not stored.
        extra: JSON object of application fields (band descriptions, ``RasterMetadata``);
            stored only when not empty; the keys stcm writes are validated
            (``runtime.metadata.check_extra``); ``"georef"`` is reserved (the georef's GCPs
            and RPCs are stored there).
        intra_tiles: Sorted indexes ``band_group * tiles + tile`` of the y tiles coded without
            the temporal reference (the encoder's per-tile mode decision); only with a
            reference; stored as a bitmap only when not empty.
        reference_grid: A ``ReferenceGrid`` when the reference is not on this image's grid
            (only with a reference), else None.
        mask: A ``SampleMask`` of the samples that are missing (nodata), or None when none is.

    Derived: ``pad``, ``latent_shape``, ``z_shape``, ``band_groups``, ``tiles``.

    Raises:
        CorruptError: A field has the wrong type or range, or fields disagree; the message
            names the field.

    >>> h = Header(model_id=bytes(16), height=100, width=70, bands=4, dtype="uint16",
    ...            normalization={"dtype": "uint16", "lo": [0, 0, 0, 0],
    ...                           "hi": [9000, 9000, 9000, 9000]}, quality=0.5, tile_size=4)
    >>> h.pad, h.latent_shape, h.z_shape, h.band_groups, len(h.to_bytes())
    ((28, 58), (8, 8), (2, 2), 2, 36)
    """

    model_id: bytes
    height: int
    width: int
    bands: int
    dtype: str
    normalization: dict
    quality: float
    tile_size: int
    reference_id: bytes | None = None
    georef: Georeference | None = None
    numerics: str = EXACT_NUMERICS
    extra: dict = field(default_factory=dict)
    intra_tiles: tuple[int, ...] = ()
    reference_grid: ReferenceGrid | None = None
    mask: SampleMask | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        for name in ("model_id", "reference_id"):
            v = getattr(self, name)
            if v is None and name == "reference_id":
                continue
            if not isinstance(v, (bytes, bytearray, memoryview)) or len(bytes(v)) != MODEL_ID_BYTES:
                raise field_error(name, f"must be {MODEL_ID_BYTES} bytes (a sha256 prefix), "
                                  f"got {v!r:.80}")
            set_(name, bytes(v))
        set_("height", int_field("height", self.height, 1, MAX_SIDE))
        set_("width", int_field("width", self.width, 1, MAX_SIDE))
        set_("bands", int_field("bands", self.bands, 1, MAX_BANDS))
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise field_error("dtype", f"must be one of {list(DTYPES)}, got {self.dtype!r:.60}")
        set_("normalization", self._check_normalization())
        set_("quality", quality_on_grid(self.quality))
        set_("tile_size", int_field("tile_size", self.tile_size, 1, MAX_TILE_SIZE))
        if self.georef is not None and not isinstance(self.georef, Georeference):
            raise field_error("georef", f"must be a Georeference or None, got "
                              f"{type(self.georef).__name__}")
        if (not isinstance(self.numerics, str) or not self.numerics.isascii()
                or not 0 < len(self.numerics) <= 255 or not self.numerics.isprintable()):
            raise field_error("numerics", f"must be 1-255 printable ASCII characters, got "
                              f"{self.numerics!r:.60}")
        set_("extra", json_object("extra", self.extra))
        if EXTRA_GEOREF in self.extra:
            raise field_error("extra", f"key {EXTRA_GEOREF!r} is reserved: put GCPs and RPCs "
                              "in the Georeference")
        check_extra(self.extra, self.bands)
        if self.mask is not None:
            if not isinstance(self.mask, SampleMask):
                raise field_error("mask", f"must be a SampleMask or None, got "
                                  f"{type(self.mask).__name__}")
            self.mask.check(self.height, self.width, self.bands)
        if self.reference_grid is not None:
            if not isinstance(self.reference_grid, ReferenceGrid):
                raise field_error("reference_grid", f"must be a ReferenceGrid or None, got "
                                  f"{type(self.reference_grid).__name__}")
            if self.reference_id is None:
                raise field_error("reference_grid", "is only meaningful with a temporal "
                                  "reference")
        if num_tiles(self.latent_shape, self.tile_size) > 0xFFFFFFFF:
            raise field_error("tile_size", f"{self.tile_size} gives more tiles than fit in u32")
        set_("intra_tiles", self._check_intra_tiles())

    def _check_intra_tiles(self) -> tuple[int, ...]:
        tiles = self.intra_tiles
        if not isinstance(tiles, (tuple, list)) or not all(is_int(t) for t in tiles):
            raise field_error("intra_tiles", f"must be a sequence of tile indexes, got "
                              f"{tiles!r:.80}")
        tiles = tuple(int(t) for t in tiles)
        if tiles and self.reference_id is None:
            raise field_error("intra_tiles", "is only meaningful with a temporal reference")
        total = self.band_groups * self.tiles
        if any(not 0 <= t < total for t in tiles) or any(a >= b for a, b in zip(tiles, tiles[1:])):
            raise field_error("intra_tiles", f"must be increasing indexes in 0..{total - 1}, "
                              f"got {tiles!r:.80}")
        return tiles

    def intra_mask(self, band_group: int) -> list[bool]:
        """Per tile of ``band_group``: True where it was coded without the reference."""
        n = self.tiles
        mask = [False] * n
        for t in self.intra_tiles:
            if t // n == band_group:
                mask[t % n] = True
        return mask

    def _check_normalization(self) -> dict:
        norm = self.normalization
        if not isinstance(norm, dict) or set(norm) != {"dtype", "lo", "hi"}:
            keys = sorted(norm) if isinstance(norm, dict) else type(norm).__name__
            raise field_error("normalization", f"must be an object with exactly dtype, lo, "
                              f"hi; got {keys}")
        if norm["dtype"] != self.dtype:
            raise field_error("normalization", f"dtype {norm['dtype']!r:.30} differs from the "
                              f"image dtype {self.dtype!r}")
        out = {"dtype": self.dtype}
        for key in ("lo", "hi"):
            values = norm[key]
            if not isinstance(values, (list, tuple)) or len(values) != self.bands:
                raise field_error("normalization", f"{key} must list one number per band "
                                  f"({self.bands}), got {values!r:.80}")
            if not all(is_number(v) for v in values):
                raise field_error("normalization", f"{key} holds a non-number: {values!r:.80}")
            out[key] = [float(v) for v in values]
            if not all(math.isfinite(v) for v in out[key]):
                raise field_error("normalization", f"{key} holds a non-finite value")
            if self.dtype in _INTEGER_DTYPES and not all(
                    v == int(v) and abs(v) < 2 ** 63 for v in out[key]):
                raise field_error("normalization", f"{key} must be integers for "
                                  f"{self.dtype} pixels, got {values!r:.80}")
        bad = [b for b, (lo, hi) in enumerate(zip(out["lo"], out["hi"])) if not hi > lo]
        if bad:
            raise field_error("normalization", f"needs hi > lo for every band; band {bad[0]} "
                              f"has lo={out['lo'][bad[0]]} hi={out['hi'][bad[0]]}")
        for b, (lo, hi) in enumerate(zip(out["lo"], out["hi"])):
            if not self._range_fits(lo, hi):
                raise field_error("normalization", f"band {b} has lo={lo} hi={hi}, outside "
                                  f"what {self.dtype} pixels can hold")
        return out

    def _range_fits(self, lo: float, hi: float) -> bool:
        if self.dtype in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[self.dtype]
            return low <= lo <= high and (hi <= high or hi == lo + 1)
        limit = _FLOAT32_MAX if self.dtype == "float32" else math.inf
        return max(abs(lo), abs(hi)) <= limit and math.isfinite(hi - lo)

    # -- derived geometry ----------------------------------------------------------------------
    @property
    def origin(self) -> tuple[int, int]:
        """(rows, cols) replicated at the top/left: the reference grid's origin, else 0."""
        return self.reference_grid.origin if self.reference_grid is not None else (0, 0)

    @property
    def pad(self) -> tuple[int, int]:
        """(rows, cols) replicated at the bottom/right so both sides of the canvas (origin
        and image) divide 64."""
        top, left = self.origin
        return padding_of(top + self.height, left + self.width)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(h, w) of y: the padded canvas / 16."""
        top, left = self.origin
        return latent_shape_of(top + self.height, left + self.width)

    @property
    def footprint(self) -> tuple[int, int, int, int]:
        """``footprint_of`` this image on its canvas: the latent box that holds its pixels."""
        return footprint_of(*self.origin, self.height, self.width)

    @property
    def z_shape(self) -> tuple[int, int]:
        """(h, w) of z: latent_shape / 4."""
        h, w = self.latent_shape
        return h // HYPER_DOWNSAMPLE, w // HYPER_DOWNSAMPLE

    @property
    def band_groups(self) -> int:
        """Number of 3-band groups, ceil(bands / 3)."""
        return -(-self.bands // BAND_GROUP_SIZE)

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
        ok = (is_int(band_group) and 0 <= band_group < self.band_groups and is_int(tile)
              and ((kind == KIND_Z and tile == 0) or (kind == KIND_Y and 0 <= tile < self.tiles)))
        if not ok:
            raise KeyError(f"no stream (band_group={band_group!r}, kind={kind!r}, tile={tile!r})"
                           f": the container has band groups 0..{self.band_groups - 1}, kind 0 "
                           f"(z, tile 0) and kind 1 (y, tiles 0..{self.tiles - 1})")
        return band_group * (1 + self.tiles) + (0 if kind == KIND_Z else 1 + tile)

    # -- the binary record -----------------------------------------------------------------------
    @property
    def flags(self) -> int:
        """The flags byte: which optional parts follow."""
        dtype_range = (self.dtype == "uint8" and set(self.normalization["lo"]) == {0.0}
                       and set(self.normalization["hi"]) == {255.0})
        return ((FLAG_GEOREF if self.georef is not None else 0)
                | (FLAG_REFERENCE if self.reference_id is not None else 0)
                | (FLAG_NUMERICS if self.numerics != EXACT_NUMERICS else 0)
                | (FLAG_EXTRA if self._stored_extra() else 0)
                | (FLAG_DTYPE_RANGE if dtype_range else 0)
                | (FLAG_INTRA_TILES if self.intra_tiles else 0)
                | (FLAG_REFERENCE_GRID if self.reference_grid is not None else 0)
                | (FLAG_MASK if self.mask is not None else 0))

    def _stored_extra(self) -> dict:
        """extra as stored: with the georef's GCPs and RPCs under ``"georef"``."""
        supplement = self.georef.supplement() if self.georef is not None else {}
        return {**self.extra, EXTRA_GEOREF: supplement} if supplement else self.extra

    def to_bytes(self) -> bytes:
        """The header record (``docs/format.md``): flags, model id, then the fields."""
        flags = self.flags
        out = bytearray([flags]) + self.model_id
        out += write_varint(self.height) + write_varint(self.width) + write_varint(self.bands)
        out.append(DTYPES.index(self.dtype))
        out += U16.pack(round(self.quality * QUALITY_STEPS))
        out += write_varint(self.tile_size)
        if not flags & FLAG_DTYPE_RANGE:
            for lo, hi in zip(self.normalization["lo"], self.normalization["hi"]):
                if self.dtype in _INTEGER_DTYPES:
                    out += write_varint(zigzag(int(lo))) + write_varint(int(hi - lo))
                else:
                    out += F64.pack(lo) + F64.pack(hi)
        if self.reference_id is not None:
            out += self.reference_id
        if flags & FLAG_REFERENCE_GRID:
            out += self.reference_grid.to_bytes()
        if flags & FLAG_INTRA_TILES:
            bitmap = bytearray(-(-self.band_groups * self.tiles // 8))
            for t in self.intra_tiles:
                bitmap[t >> 3] |= 1 << (t & 7)
            out += bitmap
        if flags & FLAG_GEOREF:
            out += self.georef.to_bytes()
        if flags & FLAG_NUMERICS:
            out += write_varint(len(self.numerics)) + self.numerics.encode("ascii")
        if flags & FLAG_EXTRA:
            text = canonical_json(self._stored_extra()).encode("utf-8")
            if len(text) > MAX_JSON_BYTES:
                raise field_error("extra", f"is {len(text)} bytes as JSON, more than "
                                  f"{MAX_JSON_BYTES}")
            out += write_varint(len(text)) + text
        if flags & FLAG_MASK:
            out += self.mask.to_bytes()
        return bytes(out)

    @classmethod
    def from_reader(cls, reader: ByteReader,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
        """Parses a header record; the caller checks that nothing is left over. An image of
        more than ``max_pixels`` values is refused before its mask is inflated."""
        flags = reader.u8("flags")
        if flags & ~KNOWN_FLAGS:
            raise CorruptError(f"corrupt stcm header: unknown flag bits "
                               f"{flags & ~KNOWN_FLAGS:#04x}")
        model_id = reader.take(MODEL_ID_BYTES, "model id")
        # Lower bounds now, not in __post_init__: the intra bitmap's size is computed from
        # them before the Header exists.
        height = int_field("height", reader.varint("height", MAX_SIDE), 1)
        width = int_field("width", reader.varint("width", MAX_SIDE), 1)
        bands = int_field("bands", reader.varint("bands", MAX_BANDS), 1)
        code = reader.u8("dtype")
        if code >= len(DTYPES):
            raise field_error("dtype", f"unknown code {code} (0..{len(DTYPES) - 1})")
        dtype = DTYPES[code]
        quality = reader.u16("quality") / QUALITY_STEPS
        tile_size = int_field("tile_size", reader.varint("tile_size", MAX_TILE_SIZE), 1)
        if flags & FLAG_DTYPE_RANGE:
            if dtype != "uint8":
                raise CorruptError(f"corrupt stcm header: flag bit 4 (dtype range) is set "
                                   f"for {dtype} pixels; only uint8 has an implied range")
            lo, hi = [0.0] * bands, [255.0] * bands
        else:
            # A record backs every band with >= 2 bytes (16 for floats): check before looping.
            per_band = 2 if dtype in _INTEGER_DTYPES else 16
            if bands * per_band > reader.remaining:
                raise TruncatedError(f"truncated stcm header: {bands} band ranges need at "
                                     f"least {bands * per_band} bytes, {reader.remaining} left")
            lo, hi = [], []
            for b in range(bands):
                if dtype in _INTEGER_DTYPES:
                    low = unzigzag(reader.varint(f"normalization lo of band {b}", 2 ** 64 - 1))
                    span = reader.varint(f"normalization range of band {b}", 2 ** 64 - 1)
                    lo.append(float(low))
                    hi.append(float(low + span))
                else:
                    lo.append(reader.f64(f"normalization lo of band {b}"))
                    hi.append(reader.f64(f"normalization hi of band {b}"))
        reference_id = (reader.take(MODEL_ID_BYTES, "reference id")
                        if flags & FLAG_REFERENCE else None)
        reference_grid = None
        if flags & FLAG_REFERENCE_GRID:
            if reference_id is None:
                raise CorruptError("corrupt stcm header: flag bit 6 (reference grid) is set "
                                   "without a reference (flag bit 1)")
            reference_grid = ReferenceGrid.from_reader(reader)
        top, left = reference_grid.origin if reference_grid is not None else (0, 0)
        intra_tiles: tuple[int, ...] = ()
        if flags & FLAG_INTRA_TILES:
            if reference_id is None:
                raise CorruptError("corrupt stcm header: flag bit 5 (intra tiles) is set "
                                   "without a reference (flag bit 1)")
            total = (-(-bands // BAND_GROUP_SIZE)
                     * num_tiles(latent_shape_of(top + height, left + width), tile_size))
            # take() checks the bitmap's bytes are present before anything is allocated.
            bitmap = reader.take(-(-total // 8), "intra tile bitmap")
            intra_tiles = tuple(i * 8 + b for i, byte in enumerate(bitmap) if byte
                                for b in range(8) if byte >> b & 1)
            if not intra_tiles:
                raise field_error("intra_tiles", "an empty bitmap stored (not canonical)")
            if intra_tiles[-1] >= total:
                raise field_error("intra_tiles", "bits set past the last tile")
        georef = Georeference.from_reader(reader) if flags & FLAG_GEOREF else None
        numerics = EXACT_NUMERICS
        if flags & FLAG_NUMERICS:
            raw = reader.text("numerics", 255)
            numerics = raw.decode("ascii", errors="replace")
            if numerics == EXACT_NUMERICS:
                raise field_error("numerics", "the implied exact numerics stored (not canonical)")
        extra = {}
        if flags & FLAG_EXTRA:
            extra = parse_json_object(reader.text("extra", MAX_JSON_BYTES), "extra")
            if not extra:
                raise field_error("extra", "an empty object stored (not canonical)")
            if EXTRA_GEOREF in extra:
                if georef is None:
                    raise CorruptError("corrupt stcm header: extra holds GCPs or RPCs "
                                       "(key 'georef') without a georef (flag bit 0)")
                georef = georef.with_supplement(extra.pop(EXTRA_GEOREF))
        check_size(height, width, bands, max_pixels)
        mask = (SampleMask.from_reader(reader, height, width, bands) if flags & FLAG_MASK
                else None)
        header = cls(model_id=model_id, height=height, width=width, bands=bands, dtype=dtype,
                     normalization={"dtype": dtype, "lo": lo, "hi": hi}, quality=quality,
                     tile_size=tile_size, reference_id=reference_id, georef=georef,
                     numerics=numerics, extra=extra, intra_tiles=intra_tiles,
                     reference_grid=reference_grid, mask=mask)
        if header.flags != flags:
            raise CorruptError(f"corrupt stcm header: flags {flags:#04x} do not match the "
                               f"fields ({header.flags:#04x}); uint8 ranges of 0..255 must "
                               "use flag bit 4")
        return header
