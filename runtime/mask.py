"""The mask of missing samples (nodata, a GDAL mask band, NaN) in an stcm header: bit planes
coded losslessly with zlib (``docs/format.md``, mask), and their NumPy form.

A set bit marks a missing sample: the encoder leaves it out of the band ranges and fills it
with something cheap to code (``stcm.bands``), the decoder writes the nodata value back.
Decompression is bounded by the size the header's image size implies, so a crafted stream
cannot make the reader allocate more than that (a zip bomb is a ``CorruptError``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from stcm.runtime.fields import ByteReader, field_error, write_varint

_SHARED, _PER_BAND = 0, 1
ZLIB_LEVEL = 9  # the writer's choice; a reader accepts any valid zlib stream


def plane_bytes(height: int, width: int) -> int:
    """Bytes of one packed bit plane: every plane starts on a byte boundary."""
    return -(-height * width // 8)


@dataclass(frozen=True)
class SampleMask:
    """Which samples of an image are missing, as packed bit planes.

    Attributes:
        per_band: One plane per band; False: one plane for every band (a pixel is missing
            in all bands or in none, as with a GDAL mask band).
        packed: The planes one after another, each ``np.packbits`` of the (H, W) plane in
            row-major order (most significant bit first), padded to a whole byte with zeros.

    The image size is the header's; ``check`` validates against it.
    """

    per_band: bool
    packed: bytes

    def check(self, height: int, width: int, bands: int) -> None:
        """CorruptError unless the planes fit an image of that size, canonically: the right
        length, zero padding bits, some sample missing, and per-band planes only when the
        bands differ."""
        if not isinstance(self.per_band, bool) or not isinstance(self.packed, bytes):
            raise field_error("mask", f"must be a bool and bytes, got {self!r:.80}")
        n = plane_bytes(height, width)
        planes = bands if self.per_band else 1
        if len(self.packed) != planes * n:
            raise field_error("mask", f"has {len(self.packed)} bytes, {planes} plane(s) of "
                              f"{height}x{width} need {planes * n}")
        pad = 8 * n - height * width
        if pad and any(self.packed[(p + 1) * n - 1] & ((1 << pad) - 1) for p in range(planes)):
            raise field_error("mask", "padding bits are set")
        if self.packed.count(0) == len(self.packed):
            raise field_error("mask", "no sample is missing (not canonical: store no mask)")
        if self.per_band and all(self.packed[p * n:(p + 1) * n] == self.packed[:n]
                                 for p in range(1, planes)):
            raise field_error("mask", "every band has the same plane (not canonical: store "
                              "one shared plane)")

    def to_bytes(self) -> bytes:
        body = zlib.compress(self.packed, ZLIB_LEVEL)
        return bytes([_PER_BAND if self.per_band else _SHARED]) + write_varint(len(body)) + body

    @classmethod
    def from_reader(cls, reader: ByteReader, height: int, width: int,
                    bands: int) -> SampleMask:
        """Reads the field; decompresses at most the bytes an image of that size needs."""
        kind = reader.u8("mask kind")
        if kind not in (_SHARED, _PER_BAND):
            raise field_error("mask", f"unknown kind {kind} (0 shared, 1 per band)")
        body = reader.text("mask", reader.remaining)
        expected = (bands if kind == _PER_BAND else 1) * plane_bytes(height, width)
        inflater = zlib.decompressobj()
        try:
            packed = inflater.decompress(body, expected)
        except zlib.error as exc:
            raise field_error("mask", f"is not a valid zlib stream ({exc})") from exc
        if len(packed) != expected or not inflater.eof or inflater.unconsumed_tail \
                or inflater.unused_data:
            raise field_error("mask", f"does not inflate to exactly {expected} bytes, the "
                              "size of its planes")
        return cls(kind == _PER_BAND, packed)  # Header checks it

    # -- NumPy ------------------------------------------------------------------------------
    @classmethod
    def from_array(cls, missing: np.ndarray) -> SampleMask | None:
        """The mask of a (bands, H, W) bool array (True: missing), or None if none is."""
        if missing.ndim != 3 or missing.dtype != bool:
            raise ValueError(f"missing must be a (bands, H, W) bool array, got "
                             f"{missing.dtype} {missing.shape}")
        if not missing.any():
            return None
        per_band = bool((missing != missing[:1]).any())
        planes = missing if per_band else missing[:1]
        return cls(per_band, b"".join(np.packbits(p.ravel()).tobytes() for p in planes))

    def to_array(self, height: int, width: int, bands: int) -> np.ndarray:
        """The (bands, H, W) bool array, True where a sample is missing."""
        return self.window(height, width, bands, (0, height), (0, width))

    def window(self, height: int, width: int, bands: int, rows: tuple[int, int],
               cols: tuple[int, int], band_range: range | None = None) -> np.ndarray:
        """The (bands, r1 - r0, c1 - c0) bool array of rows [r0, r1) and columns [c0, c1)
        (of ``band_range``, default all bands) of a ``height`` x ``width`` image: only
        those rows are unpacked."""
        (r0, r1), (c0, c1) = rows, cols
        band_range = band_range if band_range is not None else range(bands)
        n = plane_bytes(height, width)
        first, last = r0 * width, r1 * width  # bit offsets in a plane
        planes = []
        for p in (band_range if self.per_band else [0]):
            chunk = np.frombuffer(self.packed, np.uint8, count=-(-last // 8) - first // 8,
                                  offset=p * n + first // 8)
            bits = np.unpackbits(chunk)[first % 8: first % 8 + last - first]
            planes.append(bits.reshape(r1 - r0, width)[:, c0:c1].astype(bool))
        planes = np.stack(planes)
        return np.broadcast_to(planes, (len(band_range), *planes.shape[1:])).copy()


def missing_samples(image: np.ndarray, nodata: float | None,
                    missing: np.ndarray | None = None) -> np.ndarray | None:
    """The (bands, H, W) samples of ``image`` that are missing, or None when none is: those
    equal to ``nodata`` (NaN matches NaN), NaN in a float image without a nodata value (it
    restores as NaN), and those ``missing`` marks ((H, W) for every band, as a GDAL mask
    band, or (bands, H, W); True: missing)."""
    out = np.zeros(image.shape, bool)
    if nodata is not None and _representable(nodata, image.dtype):
        out |= np.isnan(image) if np.isnan(nodata) else image == image.dtype.type(nodata)
    elif nodata is None and image.dtype.kind == "f":
        out |= np.isnan(image)
    if missing is not None:
        missing = np.asarray(missing)
        if missing.dtype != bool or missing.shape not in (image.shape, image.shape[1:]):
            raise ValueError(f"missing must be a bool array of shape {image.shape[1:]} or "
                             f"{image.shape}, got {missing.dtype} {missing.shape}")
        out |= missing
    return out if out.any() else None


def restore_missing(pixels: np.ndarray, missing: np.ndarray, nodata: float | None) -> None:
    """Writes the nodata value into the missing samples of decoded ``pixels``, in place; NaN
    (float) or 0 (integer) where the image has no nodata value it can hold."""
    if nodata is not None and _representable(nodata, pixels.dtype):
        fill = nodata
    else:
        fill = np.nan if pixels.dtype.kind == "f" else 0
    pixels[missing] = fill


def _representable(value: float, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True  # NaN and inf included
    info = np.iinfo(dtype)
    return bool(np.isfinite(value) and value == int(value) and info.min <= value <= info.max)
