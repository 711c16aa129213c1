"""Images read and written block by block, so that a whole scene never sits in memory as
float (a 10240 x 10240 4-band image is 1.6 GB as float32).

Encoding reads a ``BlockSource`` (an array, or a GeoTIFF's windows: ``runtime.rasterblocks``)
twice before any transform runs: ``Scene.scan`` finds what the header needs, the per-band
value ranges without the missing samples and the mask of missing samples (packed, one bit
per sample), and for bands with some samples missing the fill's coarse levels; then
``Scene.group_block`` gives any block of a band group, normalised and filled, on demand.
Every value is bit-identical to normalising and filling the whole image
(``stcm.bands.normalize``): the normalisation is per sample, and the fill's pull-push
pyramid is computed per aligned block of ``FILL_BLOCK`` pixels up to that block's level,
the levels above it once for the whole band (a ceil(H / 256) x ceil(W / 256) grid).

Decoding writes into a ``PixelSink``: ``ArraySink`` (the in-memory API) or a GeoTIFF's
windows. The scan reads the source in strips of ``FILL_BLOCK`` rows; its memory is a strip,
the packed mask (1 bit per sample) and the coarse levels.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from stcm.bands import BandNormalization, _check_dtype, fill_block, fill_levels, fill_top
from stcm.errors import DataError
from stcm.runtime.header import BAND_GROUP_SIZE
from stcm.runtime.mask import SampleMask, missing_samples, plane_bytes

FILL_LEVELS = 8
FILL_BLOCK = 2 ** FILL_LEVELS  # pixels; also the scan's strip height (a multiple of 8)


class BlockSource(abc.ABC):
    """An image of ``bands`` x ``height`` x ``width`` samples of ``dtype``, read by blocks."""

    bands: int
    height: int
    width: int
    dtype: np.dtype

    @abc.abstractmethod
    def read(self, rows: tuple[int, int], cols: tuple[int, int],
             bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """The samples of ``bands`` (0-based) in rows [r0, r1) and columns [c0, c1): a
        (len(bands), h, w) array and the samples marked missing beyond nodata (a mask
        band: (h, w), or (len(bands), h, w) bool; True: missing), or None."""

    def read_all(self) -> np.ndarray:
        """The whole image (what a temporal reference's phase correlation needs)."""
        return self.read((0, self.height), (0, self.width), range(self.bands))[0]


class ArraySource(BlockSource):
    """A (bands, H, W) array and the optional ``missing`` mask ((H, W) or (bands, H, W))."""

    def __init__(self, image: np.ndarray, missing: np.ndarray | None = None):
        self.image = image
        self.bands, self.height, self.width = image.shape
        self.dtype = image.dtype
        if missing is not None:
            missing = np.asarray(missing)
            if missing.dtype != bool or missing.shape not in (image.shape, image.shape[1:]):
                raise ValueError(f"missing must be a bool array of shape {image.shape[1:]} or "
                                 f"{image.shape}, got {missing.dtype} {missing.shape}")
        self.missing = missing

    def read(self, rows, cols, bands):
        (r0, r1), (c0, c1), index = rows, cols, list(bands)
        pixels = self.image[index, r0:r1, c0:c1]
        missing = self.missing
        if missing is not None:
            missing = (missing[r0:r1, c0:c1] if missing.ndim == 2
                       else missing[index, r0:r1, c0:c1])
        return pixels, missing


def group_bands(group: int, bands: int) -> list[int]:
    """The image bands of band group ``group`` (the last one repeats its last real band, as
    ``stcm.bands.to_band_groups`` does)."""
    return [min(b, bands - 1) for b in range(group * BAND_GROUP_SIZE,
                                             (group + 1) * BAND_GROUP_SIZE)]


@dataclass
class Scene:
    """A scanned ``BlockSource``: its normalisation and mask, and its blocks on demand."""

    source: BlockSource
    nodata: float | None
    norm: BandNormalization
    mask: SampleMask | None
    _coarse: dict = field(default_factory=dict)  # band -> its filled level FILL_LEVELS

    @property
    def bands(self) -> int:
        return self.source.bands

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def band_groups(self) -> int:
        return -(-self.bands // BAND_GROUP_SIZE)

    @classmethod
    def scan(cls, source: BlockSource, nodata: float | None,
             on_strip: Callable[[int], None] | None = None) -> Scene:
        """Reads ``source`` once (twice with a partly missing band) in strips: the band
        ranges (``stcm.bands.normalize``'s), the mask and the fill's coarse levels.
        ``on_strip(total)`` is called after each strip read, with the strips of all passes
        known so far (progress of a long first read).

        Raises:
            DataError: NaN/inf samples that are not missing, or a range too large.
        """
        dt = _check_dtype(source.dtype, "image")
        bands, height, width = source.bands, source.height, source.width
        lo, hi = [None] * bands, [None] * bands
        planes: list[list] = [[] for _ in range(bands)]
        counts, bad, first_bad = np.zeros(bands, np.int64), 0, {}
        strips = -(-height // FILL_BLOCK)
        report = on_strip or (lambda total: None)
        for r0 in range(0, height, FILL_BLOCK):
            r1 = min(r0 + FILL_BLOCK, height)
            pixels, explicit = source.read((r0, r1), (0, width), range(bands))
            report(strips)
            missing = missing_samples(pixels, nodata, explicit)
            if missing is not None:
                counts += missing.sum(axis=(1, 2))
            for b in range(bands):
                planes[b].append(np.packbits(missing[b].ravel()) if missing is not None
                                 else None)
            if dt.kind == "f":
                wrong = ~np.isfinite(pixels)
                if missing is not None:
                    wrong &= ~missing
                if wrong.any():
                    bad += int(wrong.sum())
                    for b in np.unique(np.nonzero(wrong)[0]):
                        r, c = (int(i[0]) for i in np.nonzero(wrong[b]))
                        first_bad.setdefault(int(b), (r0 + r, c))
                    continue
            if dt == np.uint8:
                continue
            for b in range(bands):
                valid = pixels[b] if missing is None else pixels[b][~missing[b]]
                if valid.size:
                    low, high = valid.min(), valid.max()
                    lo[b] = low if lo[b] is None else min(lo[b], low)
                    hi[b] = high if hi[b] is None else max(hi[b], high)
        if bad:
            b = min(first_bad)
            r, c = first_bad[b]
            raise DataError(f"image holds {bad} NaN/inf pixel values (first at band {b}, row "
                            f"{r}, col {c}); mask or fill them first")
        norm = _normalization(dt, lo, hi, bands)
        mask, partial = None, []
        if counts.any():
            packed = [b"".join(p.tobytes() if p is not None else bytes(
                plane_bytes(min(FILL_BLOCK, height - i * FILL_BLOCK), width))
                for i, p in enumerate(strips)) for strips in planes]
            del planes
            per_band = any(p != packed[0] for p in packed[1:])
            mask = SampleMask(per_band, b"".join(packed) if per_band else packed[0])
            partial = [b for b in range(bands) if 0 < counts[b] < height * width]
        scene = cls(source, nodata, norm, mask)
        if partial:
            scene._coarse = scene._scan_fill(partial, lambda: report(2 * strips))
        return scene

    def _scan_fill(self, bands: list[int], on_strip: Callable[[], None]) -> dict:
        """The whole band's filled level ``FILL_LEVELS`` of each of ``bands``."""
        tops = {b: [] for b in bands}
        for r0 in range(0, self.height, FILL_BLOCK):
            rows = (r0, min(r0 + FILL_BLOCK, self.height))
            pixels, missing = self._read(rows, (0, self.width), bands)
            on_strip()
            for i, b in enumerate(bands):
                x = self._normalized(b, pixels[i], missing[i] if missing is not None else None)
                valid = ~missing[i] if missing is not None else np.ones(x.shape, bool)
                tops[b].append(fill_levels(x.astype(np.float64), valid, FILL_LEVELS,
                                           self.width)[-1])
        return {b: fill_top(np.concatenate([v for v, _ in t]), np.concatenate([w for _, w in t]))
                for b, t in tops.items()}

    def _read(self, rows, cols, bands):
        pixels, explicit = self.source.read(rows, cols, bands)
        return pixels, missing_samples(pixels, self.nodata, explicit)

    def _normalized(self, b: int, pixels: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
        """Band ``b``'s samples scaled to [0, 1] as ``stcm.bands.normalize`` scales them
        (before the fill)."""
        if self.dtype == np.uint8:
            return pixels.astype(np.float32) / np.float32(255.0)
        lo, hi = self.norm.lo[b], self.norm.hi[b]
        x = ((pixels.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
        if missing is not None:
            x[missing] = 0.0
        return np.clip(x, 0.0, 1.0, out=x)

    def normalized(self, bands: Sequence[int], rows: tuple[int, int],
                   cols: tuple[int, int]) -> np.ndarray:
        """(len(bands), h, w) float32: the image's rows [r0, r1) and columns [c0, c1) of
        ``bands``, normalised and filled exactly as the whole image would be."""
        unique = sorted(set(bands))
        (r0, r1), (c0, c1) = rows, cols
        box = (r0, r1), (c0, c1)
        if any(b in self._coarse for b in unique):  # the fill works on aligned blocks
            box = ((r0 // FILL_BLOCK * FILL_BLOCK, min(-(-r1 // FILL_BLOCK) * FILL_BLOCK,
                                                      self.height)),
                   (c0 // FILL_BLOCK * FILL_BLOCK, min(-(-c1 // FILL_BLOCK) * FILL_BLOCK,
                                                      self.width)))
        pixels, missing = self._read(*box, unique)
        out = {}
        for i, b in enumerate(unique):
            m = missing[i] if missing is not None else None
            x = self._normalized(b, pixels[i], m)
            if b in self._coarse and m is not None and m.any():
                levels = fill_levels(x.astype(np.float64), ~m, FILL_LEVELS, self.width)
                top_cells = levels[-1][0].shape
                i0, j0 = box[0][0] // FILL_BLOCK, box[1][0] // FILL_BLOCK
                top = self._coarse[b][i0: i0 + top_cells[0], j0: j0 + top_cells[1]]
                x = np.where(m, fill_block(levels, top), x).astype(np.float32)
            out[b] = x[r0 - box[0][0]: r1 - box[0][0], c0 - box[1][0]: c1 - box[1][0]]
        return np.stack([out[b] for b in bands])

    def group_block(self, group: int, rows: tuple[int, int], cols: tuple[int, int],
                    origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """(1, 3, h, w) float32: rows [r0, r1) and columns [c0, c1) of band group ``group``
        on the canvas whose pixel ``origin`` (row, col) is the image's first, the image's
        edge rows and columns repeated beyond it (``numpy.pad(mode="edge")``)."""
        (r0, r1), (c0, c1), (top, left) = rows, cols, origin
        ir = np.clip(np.arange(r0, r1) - top, 0, self.height - 1)
        ic = np.clip(np.arange(c0, c1) - left, 0, self.width - 1)
        a, c = int(ir[0]), int(ic[0])
        x = self.normalized(group_bands(group, self.bands), (a, int(ir[-1]) + 1),
                            (c, int(ic[-1]) + 1))
        if len(ir) != x.shape[1]:
            x = x[:, ir - a]
        if len(ic) != x.shape[2]:
            x = x[:, :, ic - c]
        return x[None]


def _normalization(dt: np.dtype, lo: list, hi: list, bands: int) -> BandNormalization:
    """``stcm.bands.normalize``'s normalisation from per-band minima and maxima (None: a
    band with no valid sample, any range does)."""
    if dt == np.uint8:
        return BandNormalization("uint8", (0.0,) * bands, (255.0,) * bands)
    low = np.array([0.0 if v is None else v for v in lo], np.float64)
    high = np.array([1.0 if v is None else v for v in hi], np.float64)
    high = np.where(high > low, high, low + 1.0)  # a constant band maps to 0
    if not np.all(np.isfinite(high - low)):
        raise DataError("image value range is too large to normalise (overflows float64)")
    return BandNormalization(dt.name, tuple(low.tolist()), tuple(high.tolist()))


class PixelSink(abc.ABC):
    """Where decoded pixels go, block by block: native dtype, missing samples restored."""

    def open(self, header, window: tuple[int, int, int, int]) -> None:
        """Before the first block: the container's header and the part of the image decoded
        (col_off, row_off, width, height); blocks' rows and columns are relative to it."""

    @abc.abstractmethod
    def write(self, bands: range, rows: tuple[int, int], cols: tuple[int, int],
              pixels: np.ndarray) -> None:
        """(len(bands), h, w) samples of ``bands`` at rows [r0, r1), columns [c0, c1) of
        the decoded area; every sample is written once."""


class ArraySink(PixelSink):
    """Decoded pixels into one (bands, H, W) array, ``pixels``."""

    pixels: np.ndarray | None = None

    def open(self, header, window):
        self.pixels = np.empty((header.bands, window[3], window[2]), np.dtype(header.dtype))

    def write(self, bands, rows, cols, pixels):
        self.pixels[bands.start: bands.stop, rows[0]: rows[1], cols[0]: cols[1]] = pixels
